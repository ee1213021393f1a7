"""Fine-tuning on a labelled fraction: the paper's semi-supervised protocol, adapted.

BYOL (Grill et al. 2020, appendix C.2) fine-tunes the pretrained encoder
with a linear head on class-balanced 1% and 10% subsets of ImageNet, with
SGD and Nesterov momentum, random crop and flip, and no weight decay. The
adaptation here, for small images on modest hardware:

- subset: the same fraction of every class (at least one image per class),
  drawn with the run's seed, so `--label-fraction 0.01` is reproducible;
- model: the pretrained backbone (all layers trainable, BatchNorm in
  training mode) and a new dense softmax head;
- optimizer: SGD, Nesterov momentum 0.9, no weight decay, learning rate
  `eval.finetune_lr` with cosine decay to 0 over `eval.finetune_epochs`
  epochs, batch `eval.batch_size`, made smaller for small subsets so that
  every epoch has at least `MIN_STEPS_PER_EPOCH` steps (a 1% subset of a
  small data set is otherwise a single step per epoch: too few updates for
  the weights, and for BatchNorm's moving statistics, which the test uses);
- augmentation: random crop (reflect-pad by 1/8 of the side, crop back) and
  horizontal flip; the test set is only scaled to [0, 1];
- BatchNorm: after training, the moving statistics are re-estimated from
  up to `RECALIBRATION_IMAGES` unaugmented labelled images ("precise BN",
  Wu & Johnson 2021). With few steps the moving averages lag the weights
  they describe; on the quickstart run, test accuracy after a 100% fine-tune
  was 79% with the lagging statistics and 96% with the batch's own.
"""

import math

import keras
import numpy as np
import tensorflow as tf

from byol_keras.data.source import to_unit_range
from byol_keras.nn.backbones import all_layers

MIN_STEPS_PER_EPOCH = 10
MIN_BATCH = 8
RECALIBRATION_IMAGES = 1024


def balanced_subset(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of `fraction` of every class's examples (at least one per class).

    Each class contributes round(fraction × its size) examples, chosen with
    `seed`, so the subset keeps the class proportions and is reproducible.

    ```python
    train_labels = np.repeat([0, 1], 50)
    indices = balanced_subset(train_labels, 0.1, seed=0)
    assert np.bincount(train_labels[indices]).tolist() == [5, 5]
    ```
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must lie in (0, 1], got {fraction}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    chosen = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        count = min(len(members), max(1, round(fraction * len(members))))
        chosen.append(rng.choice(members, size=count, replace=False))
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def finetune_classifier(
    backbone: keras.Model,
    images: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    epochs: int = 20,
    learning_rate: float = 0.01,
    batch_size: int = 256,
    seed: int = 0,
) -> keras.Model:
    """Trains `backbone` + a dense head on uint8 images; returns the classifier (softmax outputs).

    ```python
    # doctest: slow
    from byol_keras.evaluation.features import source_arrays

    images, labels = source_arrays(load_source("digits", split="train", image_size=16))
    subset = balanced_subset(labels, 0.1, seed=0)
    backbone = build_backbone("tiny", image_size=16, width=4)
    classifier = finetune_classifier(backbone, images[subset], labels[subset], 10, epochs=1)
    probabilities = classifier.predict(to_unit_range(images[:8]))
    ```
    """
    keras.utils.set_random_seed(seed)
    batch_size = finetune_batch_size(len(images), batch_size)
    steps_per_epoch = math.ceil(len(images) / batch_size)
    inputs = keras.Input(backbone.input_shape[1:], name="images")
    outputs = keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name="head")(
        backbone(inputs)
    )
    classifier = keras.Model(inputs, outputs, name="finetuned")
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, epochs * steps_per_epoch)
    classifier.compile(
        optimizer=keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True),
        loss="sparse_categorical_crossentropy",
    )
    classifier.fit(
        _augmented_batches(images, labels, batch_size, seed),
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        verbose=0,
        shuffle=False,  # the dataset shuffles itself; Keras warns that it ignores shuffle=True
    )
    _recalibrate_batchnorm(classifier, images, seed)
    return classifier


def _recalibrate_batchnorm(model: keras.Model, images: np.ndarray, seed: int) -> None:
    """Sets every BatchNorm layer's moving statistics to those of one large unaugmented batch."""
    layers = [
        layer for layer in all_layers(model) if isinstance(layer, keras.layers.BatchNormalization)
    ]
    if not layers:
        return
    rng = np.random.default_rng(seed)
    sample = images[rng.choice(len(images), min(len(images), RECALIBRATION_IMAGES), replace=False)]
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = 0.0  # the moving statistics become this batch's statistics
    try:
        model(to_unit_range(sample), training=True)
    finally:
        for layer, momentum in zip(layers, momenta, strict=True):
            layer.momentum = momentum


def finetune_batch_size(count: int, batch_size: int) -> int:
    """The batch for `count` labelled images: `batch_size`, or less so that an epoch has
    at least `MIN_STEPS_PER_EPOCH` steps (never below `MIN_BATCH`, nor above `count`).

    ```python
    assert finetune_batch_size(144, 256) == 15
    ```
    """
    small_enough = math.ceil(count / MIN_STEPS_PER_EPOCH)
    return max(1, min(count, batch_size, max(MIN_BATCH, small_enough)))


def predict_scores(classifier: keras.Model, images: np.ndarray, batch_size: int) -> np.ndarray:
    """Class probabilities [n, classes] of uint8 images, without augmentation."""
    dataset = tf.data.Dataset.from_tensor_slices(images).batch(batch_size).map(to_unit_range)
    return classifier.predict(dataset, verbose=0)


def _augmented_batches(images, labels, batch_size: int, seed: int) -> tf.data.Dataset:
    size = images.shape[1]
    pad = max(1, size // 8)

    def augment(image, label, pair):
        image = to_unit_range(image)
        padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]], mode="REFLECT")
        image = tf.image.stateless_random_crop(padded, [size, size, 3], seed=pair)
        image = tf.image.stateless_random_flip_left_right(image, seed=pair[::-1])
        return image, label

    seeds = tf.data.Dataset.random(seed=seed).batch(2)
    return (
        tf.data.Dataset.from_tensor_slices((images, labels))
        .repeat()
        .shuffle(min(len(images), 10_000), seed=seed)
        .apply(lambda data: tf.data.Dataset.zip((data, seeds)))
        .map(lambda example, pair: augment(*example, pair), num_parallel_calls=tf.data.AUTOTUNE)
        .batch(batch_size, drop_remainder=True)
        .prefetch(tf.data.AUTOTUNE)
    )
