"""The tf.data pipelines that feed BYOL: image batches and batches of view pairs.

Images of one size (CIFAR, MNIST, digits) are batched, then augmented whole
batches at a time. Images of their own sizes (photos, frames) get their
crops per image, from the original and before batching (augment/crops.py),
and the rest of the augmentation on whole batches; the cache then holds the
encoded files (README, "Views from the original").

```python
augmenter = make_augmenter("digits", image_size=16, seed=0)
pairs = pair_dataset(load_source("digits", image_size=16), augmenter, batch_size=8, seed=0)
view1, view2 = next(iter(pairs))  # each [8, 16, 16, 3] float32 in [0, 1]
assert view1.shape == (8, 16, 16, 3)
```
"""

import random

import tensorflow as tf

from byol_keras.augment.augmenter import BYOLAugmenter
from byol_keras.augment.crops import crop_pair
from byol_keras.augment.layers import fold_seed
from byol_keras.augment.views import view_params
from byol_keras.data import ImageSource
from byol_keras.data.source import to_unit_range
from byol_keras.errors import UsageError


def make_augmenter(
    preset: str = "byol", image_size: int = 32, seed: int | None = None, **overrides
) -> BYOLAugmenter:
    """A `BYOLAugmenter` for a preset (`"byol"`, `"cifar"`, `"digits"`) with overrides.

    Args:
        preset: `"byol"`, `"cifar"` or `"digits"`.
        image_size: Side of the square views.
        seed: Seed of the augmenter's generator.
        **overrides: `augment` config keys; a value applies to both views,
            `blur_prob` and `solarize_prob` take a `(view1, view2)` pair.

    Returns:
        A `BYOLAugmenter`.

    ```python
    augmenter = make_augmenter("cifar", image_size=32, seed=0, solarize_prob=(0.0, 0.1))
    ```
    """
    return BYOLAugmenter(image_size, *view_params(preset, **overrides), seed=seed)


def image_batches(
    images: ImageSource | tf.data.Dataset,
    batch_size: int,
    *,
    shuffle_buffer: int = 10_000,
    seed: int | None = None,
    repeat: bool = True,
    cache: bool = True,
    augmenter: BYOLAugmenter | None = None,
) -> tf.data.Dataset:
    """Shuffled float32 [0, 1] image batches of an `ImageSource` or `(uint8 image, label)` examples.

    The on-device option: the model runs its augmenter inside `train_step`.
    Images of their own sizes cannot be batched whole: for them, `augmenter`'s
    two crops are cut per image here, from the original (as `pair_dataset`
    does), and each batch is `[batch_size, 2, S, S, 3]`, the crop pairs,
    which the augmenter inside the model finishes (jitter, grayscale, blur,
    solarisation). Without `augmenter` such images are refused.

    A source is read in a seeded random order of its keys (`ImageSource.shuffled`):
    folders list their files class by class, which a shuffle buffer alone
    would leave in windows of a few classes. With `cache` that order is drawn
    once, before the first decode, and each later pass goes through the
    buffer again; without it a new order is drawn every pass.

    Args:
        images: An `ImageSource` or a dataset of `(uint8 image, label)` examples.
        batch_size: Images per batch; the last partial batch is dropped.
        shuffle_buffer: Size of the shuffle buffer; 1 or less does not shuffle.
        seed: Seed of the order; `None` draws a random one.
        repeat: Whether to repeat the data forever (`fit` then needs
            `steps_per_epoch`).
        cache: Whether to keep the decoded uint8 images in memory.
        augmenter: The model's `BYOLAugmenter`, whose crops are cut here for
            images of their own sizes; unused for images of one size.

    Returns:
        A `tf.data.Dataset` of float32 `[batch_size, S, S, 3]` batches
        (`[batch_size, 2, S, S, 3]` crop pairs for images of their own sizes).

    ```python
    # doctest: slow
    source = load_source("digits", image_size=16)
    model = BYOL(build_backbone("tiny", image_size=16, width=4),
                 augmenter=make_augmenter("digits", image_size=16))
    model.compile(optimizer="adam")
    model.fit(image_batches(source, 32, seed=0), steps_per_epoch=2)  # views made on the device
    ```
    """
    _check_batch_size(batch_size)
    if _own_sizes(images):
        if augmenter is None:
            raise UsageError(
                "image_batches: images of their own sizes need augmenter=, whose crops are cut "
                "per image before batching"
            )
        crops = _crop_batches(
            images,
            augmenter,
            batch_size,
            _base_seed(seed, augmenter),
            seed,
            shuffle_buffer,
            repeat,
            cache,
        )
        return crops.map(lambda first, second: tf.stack([first, second], axis=1)).prefetch(
            tf.data.AUTOTUNE
        )
    images = _ordered(images, seed, shuffle_buffer, repeat, cache)
    batches = images.batch(batch_size, drop_remainder=True, num_parallel_calls=tf.data.AUTOTUNE)
    unit = batches.map(to_unit_range, num_parallel_calls=tf.data.AUTOTUNE)
    return unit.prefetch(tf.data.AUTOTUNE)


def pair_dataset(
    images: ImageSource | tf.data.Dataset,
    augmenter: BYOLAugmenter,
    batch_size: int,
    *,
    shuffle_buffer: int = 10_000,
    seed: int | None = None,
    repeat: bool = True,
    cache: bool = True,
) -> tf.data.Dataset:
    """Batches of BYOL view pairs `(view1, view2)` from a source or `(uint8 image, label)` examples.

    Images of one size are batched first, then augmented whole batches at a
    time in parallel `map` calls: the vectorised ops are far faster than a
    per-image map. Images of their own sizes (an `ImageSource` whose
    `image_size` is None, or a dataset of encoded bytes or of images without
    a static size) first get each view's crop from the original, per image
    (`augment.crops.crop_pair`, keyed by `(seed, image index)`), then the
    rest of the views per batch. Batch `i` is augmented with the stateless
    seed `(seed, i)` (`seed` falls back to the augmenter's, then to a random
    one), so equal seeds give equal pairs however many calls run at once.
    Shuffling is `image_batches`'s. With `cache`, images of their own sizes
    are kept encoded (the files' bytes) where the source has files.

    Args:
        images: An `ImageSource` or a dataset of `(uint8 image, label)` examples.
        augmenter: The `BYOLAugmenter` that makes the two views.
        batch_size: Pairs per batch; the last partial batch is dropped.
        shuffle_buffer: Size of the shuffle buffer; 1 or less does not shuffle.
        seed: Seed of the order and the augmentations (see above).
        repeat: Whether to repeat the data forever.
        cache: Whether to keep the decoded uint8 images in memory.

    Returns:
        A `tf.data.Dataset` of `(view1, view2)` float32 batches.

    ```python
    source = load_source("digits", image_size=16)
    pairs = pair_dataset(source, make_augmenter("digits", image_size=16, seed=0), 32, seed=0)
    # then model.fit(pairs, steps_per_epoch=source.num_examples // 32, epochs=100)
    ```
    """
    base = _base_seed(seed, augmenter)
    if _own_sizes(images):
        _check_batch_size(batch_size)
        batches = _crop_batches(
            images, augmenter, batch_size, base, seed, shuffle_buffer, repeat, cache
        )

        def augment(index, crops):
            batch_seed = tf.stack([tf.constant(base, tf.int64), index])
            return augmenter.augment_crops(crops, seed=batch_seed, in_tf_data=True)
    else:
        batches = image_batches(
            images, batch_size, shuffle_buffer=shuffle_buffer, seed=seed, repeat=repeat, cache=cache
        )

        def augment(index, batch):
            batch_seed = tf.stack([tf.constant(base, tf.int64), index])
            return augmenter(batch, training=True, seed=batch_seed)

    return (
        batches.enumerate()
        .map(augment, num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )


# Folded into each image's seed, so its crops draw numbers of their own,
# never those of the batch that holds it.
_CROP_SALT = 7


def _base_seed(seed: int | None, augmenter: BYOLAugmenter | None) -> int:
    """The seed of the augmentations: `seed`, else the augmenter's, else a random one."""
    base = seed if seed is not None or augmenter is None else augmenter.seed
    return random.randrange(2**31) if base is None else int(base)


def _crop_batches(
    images,
    augmenter: BYOLAugmenter,
    batch_size: int,
    base: int,
    seed: int | None,
    shuffle_buffer: int,
    repeat: bool,
    cache: bool,
) -> tf.data.Dataset:
    """Batches of `(first crops, second crops)`, each cut per image from the original."""
    if isinstance(images, ImageSource) and images.encoded is not None:
        images = images.shuffled(seed, encoded=True)
    items = _ordered(images, seed, shuffle_buffer, repeat, cache)
    views = (augmenter.view1, augmenter.view2)
    base = tf.constant(base, tf.int64)

    def crop(index, item):
        image_seed = fold_seed(tf.stack([base, index]), _CROP_SALT)
        return crop_pair(item, views, augmenter.image_size, image_seed)

    crops = items.enumerate().map(crop, num_parallel_calls=tf.data.AUTOTUNE)
    # A file that changed or vanished since the source was opened is skipped, not fatal.
    crops = crops.ignore_errors(log_warning=True)
    return crops.batch(batch_size, drop_remainder=True, num_parallel_calls=tf.data.AUTOTUNE)


def _ordered(images, seed, shuffle_buffer: int, repeat: bool, cache: bool) -> tf.data.Dataset:
    """The images alone (labels dropped), cached, shuffled and repeated as asked."""
    if isinstance(images, ImageSource):
        images = images.shuffled(seed)
    if isinstance(images.element_spec, tuple):
        images = images.map(lambda image, *_: image)
    if cache:
        images = images.cache()  # before shuffling: reshuffled every epoch
    if shuffle_buffer > 1:
        images = images.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        images = images.repeat()
    return images


def _own_sizes(images: ImageSource | tf.data.Dataset) -> bool:
    """Whether the images have sizes of their own (or are encoded), rather than one static size."""
    if isinstance(images, ImageSource):
        return images.image_size is None
    spec = images.element_spec
    image = spec[0] if isinstance(spec, tuple) else spec
    return image.dtype == tf.string or not image.shape[:2].is_fully_defined()


def _check_batch_size(batch_size) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UsageError(f"batch_size: expected a positive integer, got {batch_size!r}")
