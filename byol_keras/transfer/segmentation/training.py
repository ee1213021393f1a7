"""The segmenter's fine-tuning: augmented (image, mask) batches, void pixels weighted 0, and the
weights of the best val mean IoU kept.

```python
# doctest: slow
from byol_keras.data.segfolder import load_segmentation_split
from byol_keras.transfer.segmentation.augment import JointAugment
from byol_keras.transfer.segmentation.model import build_segmenter

train, val = (load_segmentation_split("camvid", s, (24, 32), 11, 11) for s in ("train", "val"))
segmenter = build_segmenter(build_backbone("tiny", 24, width=4), 11, decoder_channels=8)
history = finetune_segmenter(
    segmenter, (train.images, train.masks), (val.images, val.masks),
    JointAugment((24, 32), (0.5, 2.0), 0.0), epochs=1, batch_size=2, learning_rate=1e-3,
    weight_decay=1e-4, num_classes=11, ignore_index=11,
)
history["val_mean_iou"], history["best_epoch"]
```
"""

import math

import keras
import tensorflow as tf

from byol_keras.nn.precise_bn import PreciseBN
from byol_keras.transfer.segmentation.augment import PADDING, JointAugment
from byol_keras.transfer.segmentation.metrics import segmentation_scores
from byol_keras.transfer.segmentation.model import predict_confusion

MIN_STEPS_PER_EPOCH = 10


def finetune_segmenter(
    segmenter: keras.Model,
    train: tuple,
    val: tuple,
    augment: JointAugment,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    weight_decay: float,
    num_classes: int,
    ignore_index: int | None,
    seed: int = 0,
    precise_bn_batches: int = 10,
) -> dict:
    """Trains `segmenter` on augmented (image, mask) pairs; keeps the weights of the best val mIoU.

    Cross-entropy on the logits, void pixels weighted 0; AdamW with cosine
    decay to 0; mean IoU on `val` after every epoch. `train` and `val` are
    (float images [n, h, w, 3], uint8 masks [n, h, w]). Before each val
    score, the BatchNorm statistics are re-estimated over
    `precise_bn_batches` more batches of the same augmented stream
    (`PreciseBN`; 0: the moving averages as trained); the kept weights carry
    the statistics their val score used.

    Returns:
        `{"best_epoch", "val_mean_iou", "val_curve", "steps", "steps_per_epoch", "batch_size"}`.
    """
    keras.utils.set_random_seed(seed)
    images, masks = train
    batch_size = max(1, min(batch_size, len(images)))
    steps_per_epoch = max(MIN_STEPS_PER_EPOCH, math.ceil(len(images) / batch_size))
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, epochs * steps_per_epoch)
    segmenter.compile(
        optimizer=keras.optimizers.AdamW(schedule, weight_decay=weight_decay),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    best = {"val_mean_iou": -1.0, "weights": None, "epoch": 0}
    curve = []
    batches = _training_batches(images, masks, augment, batch_size, ignore_index, seed)
    calibration = None
    if precise_bn_batches:  # the same augmented stream, drawn on from one score to the next
        precise = PreciseBN(segmenter)
        stream = _training_batches(images, masks, augment, batch_size, ignore_index, seed)
        calibration = iter(stream.map(lambda image, *_: image))

    class KeepBest(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if calibration is not None:
                precise(calibration, precise_bn_batches)
            confusion = predict_confusion(
                segmenter, val[0], val[1], num_classes, ignore_index, batch_size
            )
            score = segmentation_scores(confusion, [str(i) for i in range(num_classes)])
            miou = score["mean_iou"] or 0.0
            curve.append({"epoch": epoch + 1, "loss": float(logs["loss"]), "val_mean_iou": miou})
            if miou > best["val_mean_iou"]:
                best.update(val_mean_iou=miou, weights=segmenter.get_weights(), epoch=epoch + 1)

    segmenter.fit(
        batches,
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        callbacks=[KeepBest()],
        verbose=0,
        shuffle=False,  # the dataset shuffles itself; Keras warns that it ignores shuffle=True
    )
    segmenter.set_weights(best["weights"])
    return {
        "best_epoch": best["epoch"],
        "val_mean_iou": best["val_mean_iou"],
        "val_curve": curve,
        "steps": epochs * steps_per_epoch,
        "steps_per_epoch": steps_per_epoch,
        "batch_size": batch_size,
    }


def _training_batches(images, masks, augment, batch_size, ignore_index, seed) -> tf.data.Dataset:
    def example(image, mask, pair):
        image, mask = augment(image, mask, pair)
        void = tf.equal(mask, PADDING)
        if ignore_index is not None:
            void = tf.logical_or(void, tf.equal(mask, ignore_index))
        # Void and padding pixels get class 0 as a placeholder and weight 0: they never count.
        return image, tf.where(void, 0, mask), tf.cast(tf.logical_not(void), tf.float32)

    seeds = tf.data.Dataset.random(seed=seed).batch(2)
    return (
        tf.data.Dataset.from_tensor_slices((images, masks))
        .repeat()
        .shuffle(len(images), seed=seed)
        .apply(lambda data: tf.data.Dataset.zip((data, seeds)))
        .map(lambda pair, s: example(*pair, s), num_parallel_calls=tf.data.AUTOTUNE)
        .batch(batch_size, drop_remainder=True)
        .prefetch(tf.data.AUTOTUNE)
    )
