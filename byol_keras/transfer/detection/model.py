"""A KerasCV RetinaNet on a backbone's feature pyramid: the backbone and detector model.

The backbone's `feature_pyramid` gives maps at strides 4 to 32; its stride
8, 16 and 32 maps become RetinaNet's P3, P4 and P5 (`PyramidBackbone`), and
KerasCV's own feature pyramid adds P6 and P7 and its heads predict, per
location of every level, 9 anchors (3 scales x 3 aspect ratios) of
`anchor_sizes[level]`. Why KerasCV 0.9's RetinaNet rather than KerasHub's:
keras-cv is already a dependency and has no Python floor, while keras-hub
0.32 needs Python 3.11+ and pulls in tensorflow-text, sentencepiece,
tokenizers and kagglehub, and puts the focal prior bias on the box head.
KerasCV fixes the FPN width at 256 (its `FeaturePyramid` is not saved in
the model's config, so a narrower one would not survive a reload); the
heads here have 2 convolutions instead of 4, of `head_width` filters
(`head.PredictionHead`), since they dominate the cost on a CPU.

The rest of the task, the keras-hub way: `preprocessor.py` letterboxes the
images and their boxes, `prediction.py` scales the decoded detections back
to each image's pixels, `training.py` fine-tunes, `head.py` holds the class
and box heads.

```python
backbone = build_backbone("resnet18", 64, stem="imagenet", width=16)  # strides 4 to 32
detector = build_detector(backbone, num_classes=3, image_size=(64, 64))
assert detector.num_classes == 3
```
"""

import math

import keras
import keras_cv

from byol_keras.errors import UsageError
from byol_keras.transfer.detection.head import PredictionHead
from byol_keras.transfer.pyramid import feature_pyramid

LEVELS = {"P3": 8, "P4": 16, "P5": 32}
LEVEL_STRIDES = (8, 16, 32, 64, 128)  # P3 to P7; P6 and P7 come from KerasCV's pyramid
ANCHOR_SCALES = (1.0, 2 ** (1 / 3), 2 ** (2 / 3))
ANCHOR_ASPECT_RATIOS = (0.5, 1.0, 2.0)
NMS_IOU = 0.5


@keras.saving.register_keras_serializable(package="byol_keras")
class PyramidBackbone(keras.Model):
    """A functional model from images to `{"P3", "P4", "P5"}`, as KerasCV's RetinaNet wants it.

    RetinaNet reads the layer names of its levels from `pyramid_level_inputs`;
    the outputs are `Identity` layers named after their level. A registered
    class, so that a saved detector reloads.

    ```python
    images = keras.Input((64, 64, 3))
    p3 = keras.layers.Conv2D(4, 3, strides=8, padding="same")(images)
    p4 = keras.layers.MaxPooling2D()(p3)
    p5 = keras.layers.MaxPooling2D()(p4)
    levels = {name: keras.layers.Identity(name=name)(x) for name, x in zip(LEVELS, [p3, p4, p5])}
    assert PyramidBackbone(images, levels).pyramid_level_inputs["P4"] == "P4"
    ```
    """

    def __init__(self, inputs, outputs, name=None, **kwargs):
        super().__init__(inputs, outputs, name=name, **kwargs)
        self.pyramid_level_inputs = {level: level for level in LEVELS}


def build_detector(
    backbone: keras.Model,
    num_classes: int,
    image_size: tuple,
    anchor_sizes: tuple = (16.0, 32.0, 64.0, 128.0, 256.0),
    freeze_backbone: bool = False,
    score_threshold: float = 0.05,
    max_detections: int = 100,
    head_width: int = 256,
    head_init: str = "orthogonal",
    norm: str = "group",
) -> keras_cv.models.RetinaNet:
    """A RetinaNet whose P3-P5 are the backbone's stride 8, 16 and 32 feature maps.

    The backbone's layers are used, not copied: fine-tuning changes them,
    unless `freeze_backbone`. Detections are decoded per class (non-maximum
    suppression at IoU 0.5 for each class, scores of at least
    `score_threshold`, at most `max_detections` per image), as COCO AP wants.

    Args:
        backbone: A functional backbone, e.g. a run's `backbone.keras`.
        num_classes: Object classes.
        image_size: (height, width) of the letterboxed input, multiples of 32.
        anchor_sizes: Base anchor size of each level P3-P7, in input pixels.
        freeze_backbone: Train the pyramid and heads only.
        score_threshold: Lowest score a detection keeps.
        max_detections: Most detections per image.
        head_width: Filters of the class and box heads' convolutions (KerasCV's: 256).
        head_init: Their kernels: "orthogonal", KerasCV's, or "normal", N(0, 0.01) as in
            the focal-loss paper (`head.PredictionHead`).
        norm: "none" (KerasCV's) or "group": GroupNorm on every pyramid level as the heads
            read it and after each head convolution (`head.PredictionHead`).

    Returns:
        A compiled-later `keras_cv.models.RetinaNet` on float [0, 1] images
        `[b, height, width, 3]`, boxes as xyxy pixels of that input.

    ```python
    detector = build_detector(load_model("runs/bccd/backbone.keras"), 3, (64, 64))
    ```
    """
    height, width = image_size
    pyramid = feature_pyramid(backbone, input_shape=(height, width, 3))
    strides = sorted(int(name.split("_")[1]) for name in pyramid.output)
    if not set(LEVELS.values()) <= set(strides):
        raise UsageError(
            f"--protocol detect: backbone {backbone.name!r} has feature maps at strides "
            f"{', '.join(map(str, strides))} only; RetinaNet needs strides 8, 16 and 32 "
            "(pretrain a ResNet with model.stem=imagenet; the CIFAR stem and `tiny` stop at 8)"
        )
    pyramid.trainable = not freeze_backbone
    images = keras.Input((height, width, 3), name="images")
    maps = pyramid(images)
    levels = {
        level: keras.layers.Identity(name=level)(maps[f"stride_{stride}"])
        for level, stride in LEVELS.items()
    }
    anchors = len(ANCHOR_SCALES) * len(ANCHOR_ASPECT_RATIOS)
    prior = -math.log((1 - 0.01) / 0.01)  # every anchor starts at p = 0.01 (focal loss paper)
    return keras_cv.models.RetinaNet(
        backbone=PyramidBackbone(images, levels, name="pyramid_backbone"),
        num_classes=num_classes,
        bounding_box_format="xyxy",
        anchor_generator=keras_cv.layers.AnchorGenerator(
            bounding_box_format="xyxy",
            sizes=[float(size) for size in anchor_sizes],
            scales=list(ANCHOR_SCALES),
            aspect_ratios=list(ANCHOR_ASPECT_RATIOS),
            strides=list(LEVEL_STRIDES),
            clip_boxes=True,
        ),
        classification_head=PredictionHead(
            anchors * num_classes,
            keras.initializers.Constant(prior),
            2,
            head_width,
            head_init,
            norm,
        ),
        box_head=PredictionHead(
            anchors * 4, keras.initializers.Zeros(), 2, head_width, head_init, norm
        ),
        prediction_decoder=keras_cv.layers.MultiClassNonMaxSuppression(
            bounding_box_format="xyxy",
            from_logits=True,
            iou_threshold=NMS_IOU,
            confidence_threshold=score_threshold,
            max_detections=max_detections,
            max_detections_per_class=max_detections,
        ),
    )
