"""A detector's decoded predictions, scaled back from the letterboxed input to each image's own
pixels and clipped to it (keras-hub's label encoder and prediction decoder sit in KerasCV's
RetinaNet: per-class non-maximum suppression, `model.NMS_IOU`).

```python
from byol_keras.data.voc import load_voc
from byol_keras.transfer.detection.model import build_detector
from byol_keras.transfer.detection.preprocessor import prepare_split

backbone = build_backbone("resnet18", 64, stem="imagenet", width=16)  # strides 4 to 32
detector = build_detector(backbone, num_classes=3, image_size=(64, 64))
detections = predict_detections(detector, prepare_split(load_voc("bccd", "test"), (64, 64)), 8)
detections[0].boxes, detections[0].scores  # xyxy in the first test image's own pixels
```
"""

import keras
import numpy as np
import tensorflow as tf

from byol_keras.transfer.detection.metrics import Detections
from byol_keras.transfer.detection.preprocessor import PreparedSplit


def detect(detector: keras.Model, images) -> dict:
    """Decoded detections of float [0, 1] letterboxed images: boxes (xyxy input pixels),
    confidence, classes and num_detections, as `RetinaNet.predict` gives them.

    ```python
    from byol_keras.transfer.detection.model import build_detector

    backbone = build_backbone("resnet18", 64, stem="imagenet", width=16)
    detector = build_detector(backbone, num_classes=3, image_size=(64, 64), max_detections=10)
    images = np.zeros([2, 64, 64, 3], "float32")  # letterboxed, float [0, 1]
    outputs = detect(detector, images)
    assert outputs["boxes"].shape == (2, 10, 4)  # [b, max_detections, 4], -1 after the found
    ```
    """
    images = tf.convert_to_tensor(images, tf.float32)
    return detector.decode_predictions(detector({"images": images}, training=False), images)


def predict_detections(
    detector: keras.Model, prepared: PreparedSplit, batch_size: int
) -> list[Detections]:
    """Each image's detections, in its original pixels (scaled back, clipped to the image).

    Boxes that lie wholly in the letterbox padding, empty once clipped, are dropped.

    ```python
    from byol_keras.data.voc import load_voc
    from byol_keras.transfer.detection.metrics import detection_scores
    from byol_keras.transfer.detection.model import build_detector
    from byol_keras.transfer.detection.preprocessor import prepare_split

    backbone = build_backbone("resnet18", 64, stem="imagenet", width=16)
    detector, size = build_detector(backbone, 3, (64, 64)), (64, 64)
    test = load_voc("bccd", "test")
    detection_scores(test, predict_detections(detector, prepare_split(test, size), 8))["ap50"]
    ```
    """
    results = []
    for start in range(0, len(prepared.images), batch_size):
        outputs = detect(detector, prepared.images[start : start + batch_size])
        outputs = {key: np.asarray(value) for key, value in outputs.items()}
        for offset, count in enumerate(outputs["num_detections"]):
            index = start + offset
            scale_y, scale_x = prepared.scales[index]
            height, width = prepared.truth.sizes[index]
            boxes = outputs["boxes"][offset, :count] / [scale_x, scale_y, scale_x, scale_y]
            boxes = np.clip(boxes, 0.0, [width, height, width, height])
            # A box wholly in the padding is empty once clipped: it shows nothing of the image.
            kept = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            results.append(
                Detections(
                    boxes[kept],
                    outputs["confidence"][offset, :count][kept],
                    outputs["classes"][offset, :count][kept].astype(np.int64),
                )
            )
    return results
