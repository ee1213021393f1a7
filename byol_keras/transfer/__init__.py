"""Dense transfer: a pretrained backbone fine-tuned for per-pixel and box tasks, in one package.

- `pyramid.py`: `feature_pyramid`, the backbone's multi-scale features (stride 4 to 32).
- `segfolder.py`: the `segfolder:` source of images with per-pixel class masks.
- `joint_augment.py`: crops and flips applied alike to an image and its mask.
- `segmenter.py`: the FPN semantic head, its fine-tuning and prediction.
- `segmentation_metrics.py`: the confusion matrix, IoU per class and mean IoU.
- `segment.py`: `evaluate_segmentation`, the `--protocol segment` fine-tune and test.
- `segment_pictures.py`: test images with their true and predicted masks.
- `boxes.py`: `BoxSplit`, images with object boxes in their own pixels, and what
  the box readers share (image checks, clipping, counting what is skipped).
- `voc.py`, `coco.py`: the `voc:` and `coco:` readers; `box_sources.py` picks one by spec.
- `detection_metrics.py`: COCO AP figures from pycocotools.
- `detector.py`: the KerasCV RetinaNet on the pyramid, letterboxing, fine-tuning, prediction.
- `detect.py`: `evaluate_detection`, the `--protocol detect` fine-tune and test.
- `detect_pictures.py`: test images with their true and predicted boxes.
- `protocol.py`: what segment and detect share (result names, label subsets, refusals).

The modules are imported one by one: this file imports none of them, because
`segfolder.py`, `voc.py` and `coco.py` also serve pretraining (`data.source:
segfolder:...`, `voc:...`) and must not pull in the fine-tuning code. The
segmenter's and detector's exports are `byol_keras.transfer.segmentation.export` and `.detector`.

```python
from byol_keras.transfer.segmentation.protocol import evaluate_segmentation
```
"""
