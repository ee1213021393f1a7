"""The detector's fine-tuning: augmented batches, focal and smooth L1 losses, and the weights of
the best val AP50 kept.

```python
# doctest: slow
from byol_keras.data.voc import load_voc
from byol_keras.transfer.detection.model import build_detector
from byol_keras.transfer.detection.preprocessor import prepare_split

backbone = build_backbone("resnet18", 64, stem="imagenet", width=16)
detector = build_detector(backbone, num_classes=3, image_size=(64, 64))
train = prepare_split(load_voc("bccd", "train"), (64, 64), as_uint8=True)
val = prepare_split(load_voc("bccd", "val"), (64, 64))
history = finetune_detector(detector, train, val, 1, 4, 1e-4, 1e-4, (0.75, 1.25))
history["val_ap50"], history["best_epoch"]
```
"""

import math
import warnings

import keras
import keras_cv
import tensorflow as tf

from byol_keras.nn.precise_bn import PreciseBN
from byol_keras.transfer.detection.metrics import detection_scores
from byol_keras.transfer.detection.prediction import predict_detections
from byol_keras.transfer.detection.preprocessor import PreparedSplit

MIN_STEPS_PER_EPOCH = 10
GRADIENT_CLIP_NORM = 10.0


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
    from byol_keras.transfer.detection.preprocessor import prepare_split

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
