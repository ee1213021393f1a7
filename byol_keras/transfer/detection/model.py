"""A KerasCV RetinaNet on a backbone's feature pyramid, its fine-tuning with val selection, and
its predictions in the original images' pixels.

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
(`retinanet_head.PredictionHead`), since they dominate the cost on a CPU.

Images are letterboxed: resized keeping their aspect to fit `image_size`,
then padded at the bottom and right (`letterbox`), boxes scaled alike;
predictions are scaled back and clipped to the original image.

```python
from byol_keras.data.voc import load_voc

backbone = build_backbone("resnet18", 64, stem="imagenet", width=16)  # strides 4 to 32
detector = build_detector(backbone, num_classes=3, image_size=(64, 64))
test = load_voc("bccd", "test")
detections = predict_detections(detector, prepare_split(test, (64, 64)), batch_size=8)
detections[0].boxes, detections[0].scores  # xyxy in the first test image's own pixels
```
"""

import math
import warnings
from dataclasses import dataclass

import keras
import keras_cv
import numpy as np
import tensorflow as tf

from byol_keras.data.boxes import BoxSplit
from byol_keras.errors import UsageError
from byol_keras.transfer.detection.head import PredictionHead
from byol_keras.transfer.detection.metrics import Detections, detection_scores
from byol_keras.transfer.precise_bn import PreciseBN
from byol_keras.transfer.pyramid import feature_pyramid

LEVELS = {"P3": 8, "P4": 16, "P5": 32}
LEVEL_STRIDES = (8, 16, 32, 64, 128)  # P3 to P7; P6 and P7 come from KerasCV's pyramid
ANCHOR_SCALES = (1.0, 2 ** (1 / 3), 2 ** (2 / 3))
ANCHOR_ASPECT_RATIOS = (0.5, 1.0, 2.0)
NMS_IOU = 0.5
MIN_STEPS_PER_EPOCH = 10
GRADIENT_CLIP_NORM = 10.0


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
            the focal-loss paper (`retinanet_head.PredictionHead`).

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
            anchors * num_classes, keras.initializers.Constant(prior), 2, head_width, head_init
        ),
        box_head=PredictionHead(anchors * 4, keras.initializers.Zeros(), 2, head_width, head_init),
        prediction_decoder=keras_cv.layers.MultiClassNonMaxSuppression(
            bounding_box_format="xyxy",
            from_logits=True,
            iou_threshold=NMS_IOU,
            confidence_threshold=score_threshold,
            max_detections=max_detections,
            max_detections_per_class=max_detections,
        ),
    )


def letterbox(images: tf.Tensor, size: tuple) -> tuple[tf.Tensor, tf.Tensor]:
    """Resizes uint8 images `[b, h, w, 3]` keeping their aspect to fit `size`, pads bottom/right.

    Returns float32 [0, 1] images `[b, height, width, 3]` and the `[2]`
    factors (y, x) by which a pixel coordinate scales: the resized height
    over `h`, the resized width over `w` (bilinear, half-pixel centres, no
    antialiasing; padding is 0).

    ```python
    inputs, (scale_y, scale_x) = letterbox(tf.zeros([1, 480, 640, 3], tf.uint8), (256, 320))
    ```
    """
    height, width = size
    shape = tf.cast(tf.shape(images)[1:3], tf.float32)
    factor = tf.minimum(height / shape[0], width / shape[1])
    resized = tf.cast(tf.maximum(tf.round(shape * factor), 1.0), tf.int32)
    pixels = tf.image.resize(tf.cast(images, tf.float32) / 255.0, resized, method="bilinear")
    pixels = tf.image.pad_to_bounding_box(pixels, 0, 0, height, width)
    return pixels, tf.cast(resized, tf.float32) / shape


@dataclass(frozen=True)
class PreparedSplit:
    """A `BoxSplit`'s images letterboxed to one size, with their boxes in the letterboxed pixels.

    Args:
        truth: The split itself, boxes in the original pixels (for the metrics).
        images: float32 [0, 1] `[n, height, width, 3]` (uint8 when prepared for training).
        scales: float32 `[n, 2]`, each image's (y, x) factor from original to letterboxed pixels.
        boxes: float32 `[n, k, 4]` xyxy letterboxed pixels, -1 after an image's own boxes.
        classes: float32 `[n, k]`, -1 after an image's own boxes.
    """

    truth: BoxSplit
    images: np.ndarray
    scales: np.ndarray
    boxes: np.ndarray
    classes: np.ndarray


def prepare_split(split: BoxSplit, size: tuple, as_uint8: bool = False) -> PreparedSplit:
    """Decodes and letterboxes every image of `split`; pads each image's boxes to the most any has.

    `as_uint8` keeps the letterboxed pixels as uint8 (a quarter of the
    memory), for training images that are augmented anyway.

    ```python
    from byol_keras.data.box_sources import load_box_split

    prepared = prepare_split(load_box_split("voc:bccd", "val"), (64, 64))
    assert prepared.images.shape == (3, 64, 64, 3)  # bccd's 3 val images; boxes [3, most, 4]
    ```
    """
    from byol_keras.data.image_files import pillow_decode

    most = max(1, max(len(boxes) for boxes in split.boxes))
    images = np.zeros((len(split), *size, 3), np.uint8 if as_uint8 else np.float32)
    scales = np.zeros((len(split), 2), np.float32)
    boxes = np.full((len(split), most, 4), -1.0, np.float32)
    classes = np.full((len(split), most), -1.0, np.float32)
    for index, path in enumerate(split.paths):
        pixels, scale = letterbox(tf.constant(pillow_decode(path)[np.newaxis]), size)
        pixels = np.asarray(pixels[0])
        images[index] = np.round(pixels * 255.0) if as_uint8 else pixels
        scales[index] = np.asarray(scale)
        count = len(split.boxes[index])
        scale_y, scale_x = scales[index]
        boxes[index, :count] = split.boxes[index] * [scale_x, scale_y, scale_x, scale_y]
        classes[index, :count] = split.classes[index]
    return PreparedSplit(split, images, scales, boxes, classes)


def detect(detector: keras.Model, images) -> dict:
    """Decoded detections of float [0, 1] letterboxed images: boxes (xyxy input pixels),
    confidence, classes and num_detections, as `RetinaNet.predict` gives them.

    ```python
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


def finetune_detector(
    detector: keras.Model,
    train: PreparedSplit,
    val: PreparedSplit,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    weight_decay: float,
    scale_range: tuple,
    seed: int = 0,
    precise_bn_batches: int = 20,
) -> dict:
    """Trains `detector` on augmented train images; keeps the weights of the best val AP50.

    Focal loss on the classes and smooth L1 on the box offsets (KerasCV's
    RetinaNet losses), AdamW with cosine decay to 0 and gradients clipped to
    a global norm of 10; COCO AP50 on `val` (original pixels) after every
    epoch. Augmentation: KerasCV's box-aware horizontal flip and scale
    jitter (`JitteredResize`: rescale by a factor in `scale_range`, crop or
    pad back to the input size). Before each val score, the BatchNorm
    statistics are re-estimated over `precise_bn_batches` more batches of the
    same augmented stream (`PreciseBN`; 0: the moving averages as trained);
    the kept weights carry the statistics their val score used.

    Returns:
        `{"best_epoch", "val_ap50", "val_curve", "steps", "steps_per_epoch", "batch_size"}`.
    """
    keras.utils.set_random_seed(seed)
    batch_size = max(1, min(batch_size, len(train.images)))
    steps_per_epoch = max(MIN_STEPS_PER_EPOCH, math.ceil(len(train.images) / batch_size))
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, epochs * steps_per_epoch)
    detector.compile(
        classification_loss="focal",
        box_loss="smoothl1",
        optimizer=keras.optimizers.AdamW(
            schedule, weight_decay=weight_decay, global_clipnorm=GRADIENT_CLIP_NORM
        ),
        jit_compile=False,
    )
    best = {"val_ap50": -1.0, "weights": None, "epoch": 0}
    curve = []
    batches = training_batches(train, batch_size, scale_range, seed)
    calibration = None
    if precise_bn_batches:  # the same augmented stream, drawn on from one score to the next
        # All the detector's BatchNorm layers are in its backbone: pyramid and heads need no pass.
        precise = PreciseBN(detector, run=detector.feature_extractor)
        stream = training_batches(train, batch_size, scale_range, seed)
        calibration = iter(stream.map(lambda images, _: images))

    class KeepBest(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if calibration is not None:
                precise(calibration, precise_bn_batches)
            scores = detection_scores(val.truth, predict_detections(detector, val, batch_size))
            curve.append(
                {
                    "epoch": epoch + 1,
                    "loss": float(logs["loss"]),
                    "val_ap50": scores["ap50"],
                    "val_ap": scores["ap"],
                }
            )
            ap50 = scores["ap50"] or 0.0  # None: no val box to score
            if ap50 > best["val_ap50"]:
                best.update(val_ap50=ap50, weights=detector.get_weights(), epoch=epoch + 1)

    with warnings.catch_warnings():
        # KerasCV's train_step calls its functional model with the image tensor,
        # not the {"images": ...} dict it was built on: Keras warns on every fine-tune.
        warnings.filterwarnings("ignore", "The structure of `inputs` doesn't match")
        detector.fit(
            batches,
            epochs=epochs,
            steps_per_epoch=steps_per_epoch,
            callbacks=[KeepBest()],
            verbose=0,
            shuffle=False,  # the dataset shuffles itself
        )
    detector.set_weights(best["weights"])
    return {
        "best_epoch": best["epoch"],
        "val_ap50": best["val_ap50"],
        "val_curve": curve,
        "steps": epochs * steps_per_epoch,
        "steps_per_epoch": steps_per_epoch,
        "batch_size": batch_size,
    }


class _SeededUniform(keras_cv.core.FactorSampler):
    """Uniform factors from a seeded generator: KerasCV 0.9's own sampler ignores the seed."""

    def __init__(self, low: float, high: float, seed: int):
        self.low, self.high = low, high
        self.generator = tf.random.Generator.from_seed(seed)

    def __call__(self, shape=(), dtype="float32"):
        return self.generator.uniform(shape, self.low, self.high, dtype=dtype)


def training_batches(
    train: PreparedSplit, batch_size: int, scale_range: tuple, seed: int
) -> tf.data.Dataset:
    """Endless shuffled, augmented batches `(images, {"boxes", "classes"})`, the same for a seed.

    ```python
    from byol_keras.data.voc import load_voc

    train = prepare_split(load_voc("bccd", "train"), (64, 64), as_uint8=True)
    images, targets = next(iter(training_batches(train, 4, (0.75, 1.25), seed=0)))
    assert images.shape == (4, 64, 64, 3)  # targets["boxes"]: [4, most, 4] xyxy pixels
    ```
    """
    size = tuple(train.images.shape[1:3])
    # KerasCV 0.9 leaves its layers on TensorFlow's global generator for seed 0 (`if seed:`),
    # and JitteredResize never hands its seed on: every draw gets a generator seeded here.
    flip = keras_cv.layers.RandomFlip("horizontal", bounding_box_format="xyxy")
    flip._random_generator = tf.random.Generator.from_seed(seed * 3 + 1)
    jitter = keras_cv.layers.JitteredResize(
        target_size=size,
        scale_factor=_SeededUniform(*scale_range, seed=seed * 3 + 2),
        bounding_box_format="xyxy",
    )
    jitter._random_generator = tf.random.Generator.from_seed(seed * 3 + 3)
    most = train.boxes.shape[1]

    def augment(images, boxes, classes):
        data = {
            "images": tf.cast(images, tf.float32) / 255.0,
            "bounding_boxes": {"boxes": boxes, "classes": classes},
        }
        data = jitter(flip(data))
        dense = keras_cv.bounding_box.to_dense(data["bounding_boxes"], max_boxes=most)
        return data["images"], {"boxes": dense["boxes"], "classes": dense["classes"]}

    # map runs sequentially: the generators' draws must come in the same order every time.
    return (
        tf.data.Dataset.from_tensor_slices((train.images, train.boxes, train.classes))
        .repeat()
        .shuffle(len(train.images), seed=seed)
        .batch(batch_size, drop_remainder=True)
        .map(augment)
        .prefetch(2)
    )
