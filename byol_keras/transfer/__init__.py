"""Dense transfer: a pretrained backbone fine-tuned for per-pixel and box tasks, one folder each.

Shared by the tasks:

- `protocol.py`: `DenseProtocol`, the protocol skeleton (read train/val/test, refuse
  shared and pretraining images, fine-tune a seeded subset, keep the best val
  weights, score test, write the result and the model), and its parts.
- `pyramid.py`: `feature_pyramid`, the backbone's multi-scale features (stride 4 to 32).
- `precise_bn.py`: `PreciseBN`, BatchNorm statistics re-estimated for the kept weights.
- `colours.py`: the fixed colour of each class in the pictures.

One folder per task, each with the same modules (`tasks.py` lists the tasks):

- `segmentation/`: `--protocol segment` on a `segfolder:` source. `model.py`, the FPN
  semantic head and prediction; `augment.py`, crops and flips applied alike to an
  image and its mask; `training.py`; `metrics.py`, the confusion matrix and IoU;
  `protocol.py`; `pictures.py`; `export.py`, the SavedModel and ONNX export.
- `detection/`: `--protocol detect` on a `voc:` or `coco:` source, split the keras-hub
  way. `model.py`, the KerasCV RetinaNet on the pyramid (`head.py`, its class and box
  heads); `preprocessor.py`, letterboxing; `prediction.py`, detections in each
  image's own pixels; `training.py`; `metrics.py`, COCO AP from pycocotools;
  `protocol.py`; `pictures.py`; `export.py`, NMS inside.

The data they read are `byol_keras.data`'s (`segfolder.py`, `voc.py`, `coco.py`),
since pretraining reads them too. This file imports none of the modules, so that
importing one task never loads another.

```python
from byol_keras.transfer.segmentation.protocol import evaluate_segmentation
```
"""
