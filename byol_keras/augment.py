"""BYOL's two asymmetric views (Grill et al. 2020, Appendix B) and the tf.data pipeline for them.

```python
augmenter = make_augmenter("cifar", image_size=32, seed=0)
pairs = pair_dataset(source.dataset, augmenter, batch_size=256, seed=0)
view1, view2 = next(iter(pairs))  # each [256, 32, 32, 3] float32 in [0, 1]
```

A view is: random resized crop and horizontal flip; colour jitter with
probability `jitter_prob`, its four adjustments in a random order; grayscale;
Gaussian blur; solarisation. `ViewParams` (view_params.py) holds the paper's numbers, with the
meaning they have in the official BYOL code (deepmind-research,
`byol/utils/augmentations.py`), which is also KerasCV's meaning once the
factors are translated:

| parameter | layer | what it does |
|---|---|---|
| crop_area, crop_aspect | `RandomResizedCrop` (ours) | area fraction, log-uniform w/h |
| flip_prob | the same layer | reads the crop's columns right to left |
| brightness b | KerasCV `RandomBrightness` | x + d, d ~ U[-b, b] |
| contrast c | KerasCV `RandomContrast` | (x - mean) × f + mean per channel, f ~ U[1-c, 1+c] |
| saturation s | KerasCV `RandomSaturation` | HSV S × f, f ~ U[1-s, 1+s], given as f / (1+f) (a) |
| hue h | KerasCV `RandomHue` | H + d turns, d ~ U[-h, h] (b) |
| grayscale_prob | KerasCV `Grayscale` | after the jitter, 3 channels out |
| blur_prob, blur_sigma | `RandomGaussianBlur` (ours) | kernel ~10% of the side, odd |
| solarize_prob | KerasCV `Solarization` | threshold 127.5 / 255: x < 0.5 ? x : 1 - x |

(a) KerasCV's saturation factor 0.5 means unchanged. (b) KerasCV's own hue
`factor` f would mean a shift of up to f/2. Lower bounds of 1-c and 1-s are
clamped at 0. "Ours" are in augment_layers.py.

torchvision's `ColorJitter` reads the same numbers differently (brightness
multiplies by U[1-b, 1+b], contrast and saturation blend with the grey image);
the BYOL authors' code is the one followed here. Other differences from it:
crop boxes are continuous rather than whole pixels; the blur pads by
reflection (theirs pads with zeros, darkening borders); the jitter order is one
random permutation per batch rather than per image (see `_jitter`).

The crop and the blur are our own layers (augment_layers.py says why KerasCV's
were not used: speed for the crop; probability, padding and seeding for the
blur). KerasCV layers draw from stateful generators, so the augmenter draws every per-sample
number itself with stateless ops keyed by one `[2]` seed per batch and passes
them to each layer's vectorised `augment_images(images, transformations)`:
pipelines stay reproducible under parallel `map`, and toggling one transform
leaves the others' random numbers alone. Probabilistic transforms run on the
whole batch and are selected per sample with `tf.where`; transforms whose
probability or strength is 0 are skipped.
"""

import dataclasses
import functools
import random

import keras
import keras_cv
import tensorflow as tf

from byol_keras.augment_layers import (
    RandomGaussianBlur,
    RandomResizedCrop,
    default_blur_kernel_size,
    draw_seed,
    fold_seed,
)
from byol_keras.errors import UsageError
from byol_keras.view_params import ViewParams, as_view_params, view_params


@keras.saving.register_keras_serializable(package="byol_keras")
class BYOLAugmenter(keras.layers.Layer):
    """Makes BYOL's two differently augmented views of a batch of images.

    Call it on float32 images in [0, 1] of shape `[B, H, W, 3]` (uint8 is
    scaled by 1/255); it returns `(view1, view2)`, each `[B, S, S, 3]` float32
    in [0, 1] with `S = image_size`. With `training=False` both views are the
    plain bilinear resize. An optional `seed` call argument (`[2]` integers)
    keys all random numbers (what `pair_dataset` passes, one per batch);
    without it the layer advances its own `keras.random.SeedGenerator`, which
    is what happens inside a compiled `train_step`.

    ```python
    augmenter = BYOLAugmenter(32, *view_params("byol"), seed=0)
    view1, view2 = augmenter(tf.random.uniform([8, 32, 32, 3]))
    ```
    """

    def __init__(
        self,
        image_size: int,
        view1: ViewParams | dict,
        view2: ViewParams | dict,
        seed: int | None = None,
        **kwargs,
    ):
        # Augmentation stays float32 under a mixed-precision policy.
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 2:
            raise UsageError(f"image_size: expected an integer >= 2, got {image_size!r}")
        self.image_size = image_size
        self.view1 = as_view_params(view1)
        self.view2 = as_view_params(view2)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        kernel_size = default_blur_kernel_size(image_size)
        self.crops = [
            RandomResizedCrop(image_size, v.crop_area, v.crop_aspect, v.flip_prob, dtype="float32")
            for v in (self.view1, self.view2)
        ]
        self.blurs = [
            RandomGaussianBlur(kernel_size, v.blur_sigma, v.blur_prob, dtype="float32")
            for v in (self.view1, self.view2)
        ]
        # Only these layers' augment_images are used, with numbers drawn from
        # ViewParams, so the factors given here are placeholders.
        unit = (0.0, 1.0)
        self.brightness = keras_cv.layers.RandomBrightness(0.0, unit, dtype="float32")
        self.contrast = keras_cv.layers.RandomContrast(unit, factor=0.5, dtype="float32")
        self.saturation = keras_cv.layers.RandomSaturation((0.5, 0.5), dtype="float32")
        self.hue = keras_cv.layers.RandomHue((0.0, 0.0), unit, dtype="float32")
        self.grayscale = keras_cv.layers.Grayscale(output_channels=3, dtype="float32")
        self.solarize = keras_cv.layers.Solarization(
            unit, threshold_factor=(127.5, 127.5), dtype="float32"
        )

    def build(self, input_shape):
        # The sublayers hold no weights (only seed-generator states made in
        # __init__) and are invoked through augment_images, which never builds them.
        jitter = (self.brightness, self.contrast, self.saturation, self.hue)
        for layer in (*self.crops, *self.blurs, *jitter):
            layer.built = True
        self.built = True

    def call(self, images, training=True, seed=None):
        images = tf.convert_to_tensor(images)
        if images.dtype.is_integer:
            images = tf.cast(images, tf.float32) / 255.0
        images = tf.cast(images, tf.float32)
        if not training:
            plain = tf.image.resize(images, [self.image_size, self.image_size])
            return plain, plain
        seed = draw_seed(self.seed_generator) if seed is None else tf.cast(seed, tf.int64)
        return tuple(self._view(images, index, fold_seed(seed, index + 1)) for index in range(2))

    def _view(self, images, index: int, seed):
        params = (self.view1, self.view2)[index]
        x = self.crops[index](images, seed=fold_seed(seed, 0))
        batch = tf.shape(x)[:1]

        def maybe(salt, prob, transformed, original):
            if prob >= 1.0:
                return transformed
            coin = tf.random.stateless_uniform(batch, fold_seed(seed, salt))
            return tf.where((coin < prob)[:, None, None, None], transformed, original)

        if params.jitter_prob > 0:
            jittered = self._jitter(x, params, fold_seed(seed, 1))
            if jittered is not None:
                x = maybe(2, params.jitter_prob, jittered, x)
        if params.grayscale_prob > 0:
            x = maybe(3, params.grayscale_prob, self.grayscale(x), x)
        x = self.blurs[index](x, seed=fold_seed(seed, 4))
        if params.solarize_prob > 0:
            x = maybe(5, params.solarize_prob, self.solarize(x), x)
        return tf.clip_by_value(x, 0.0, 1.0)

    def _jitter(self, x, params: ViewParams, seed):
        """Brightness, contrast, saturation and hue with per-sample strengths, in a random order."""
        batch = tf.shape(x)[:1]

        def uniform(salt, lo, hi, shape=batch):
            return tf.random.stateless_uniform(shape, fold_seed(seed, salt), lo, hi)

        def factor(salt, strength):
            return uniform(salt, max(0.0, 1.0 - strength), 1.0 + strength)

        per_image = tf.concat([batch, [1, 1, 1]], axis=0)
        ops = []
        if params.brightness > 0:
            delta = uniform(0, -params.brightness, params.brightness, per_image)
            ops.append(lambda images: self.brightness.augment_images(images, delta))
        if params.contrast > 0:
            c = tf.reshape(factor(1, params.contrast), per_image)
            ops.append(lambda images: self.contrast.augment_images(images, c))
        if params.saturation > 0:
            f = factor(2, params.saturation)
            ops.append(lambda images: self.saturation.augment_images(images, f / (1.0 + f)))
        if params.hue > 0:
            shift = uniform(3, -params.hue, params.hue)
            ops.append(lambda images: self.hue.augment_images(images, shift))
        if not ops:
            return None
        # One order per batch. A per-sample order, as the official code's vmap
        # gives, means running every op at every position and selecting: 16
        # instead of 4 ops, with two HSV round trips each for saturation and hue;
        # measured, that held the tf.data pipeline to ~1,100 pairs/s here.
        order = tf.argsort(tf.random.stateless_uniform([len(ops)], fold_seed(seed, 4)))
        for position in range(len(ops)):
            x = tf.switch_case(order[position], [functools.partial(op, x) for op in ops])
        return x

    def compute_output_shape(self, input_shape):
        shape = (input_shape[0], self.image_size, self.image_size, 3)
        return shape, shape

    def get_config(self):
        config = super().get_config()
        config.update(
            image_size=self.image_size,
            view1=dataclasses.asdict(self.view1),
            view2=dataclasses.asdict(self.view2),
            seed=self.seed,
        )
        return config


def make_augmenter(
    preset: str = "byol", image_size: int = 32, seed: int | None = None, **overrides
) -> BYOLAugmenter:
    """A `BYOLAugmenter` for a preset (`"byol"`, `"cifar"`, `"digits"`) with overrides.

    ```python
    augmenter = make_augmenter("cifar", image_size=32, seed=0, solarize_prob=(0.0, 0.1))
    ```
    """
    return BYOLAugmenter(image_size, *view_params(preset, **overrides), seed=seed)


def image_batches(
    images: tf.data.Dataset,
    batch_size: int,
    *,
    shuffle_buffer: int = 10_000,
    seed: int | None = None,
    repeat: bool = True,
    cache: bool = True,
) -> tf.data.Dataset:
    """Shuffled float32 [0, 1] image batches of `(uint8 image, label)` examples.

    The on-device option: the model runs its augmenter inside `train_step`.

    ```python
    model = BYOL(..., augmenter=make_augmenter("cifar"))
    model.fit(image_batches(source.dataset, 256, seed=0), steps_per_epoch=195)
    ```
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UsageError(f"batch_size: expected a positive integer, got {batch_size!r}")
    if isinstance(images.element_spec, tuple):
        images = images.map(lambda image, *_: image)
    if cache:
        images = images.cache()  # uint8, before shuffling: reshuffled every epoch
    if shuffle_buffer > 1:
        images = images.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        images = images.repeat()
    batches = images.batch(batch_size, drop_remainder=True, num_parallel_calls=tf.data.AUTOTUNE)
    return batches.map(
        lambda batch: tf.image.convert_image_dtype(batch, tf.float32),
        num_parallel_calls=tf.data.AUTOTUNE,
    ).prefetch(tf.data.AUTOTUNE)


def pair_dataset(
    images: tf.data.Dataset,
    augmenter: BYOLAugmenter,
    batch_size: int,
    *,
    shuffle_buffer: int = 10_000,
    seed: int | None = None,
    repeat: bool = True,
    cache: bool = True,
) -> tf.data.Dataset:
    """Batches of BYOL view pairs `(view1, view2)` from `(uint8 image, label)` examples.

    Batches first, then augments whole batches in parallel `map` calls: the
    vectorised ops are far faster than a per-image map. Batch `i` is augmented
    with the stateless seed `(seed, i)` (`seed` falls back to the augmenter's,
    then to a random one), so equal seeds give equal pairs however many calls
    run at once.

    ```python
    pairs = pair_dataset(source.dataset, make_augmenter("cifar", seed=0), 256, seed=0)
    model.fit(pairs, steps_per_epoch=195, epochs=100)
    ```
    """
    base = seed if seed is not None else augmenter.seed
    base = random.randrange(2**31) if base is None else int(base)
    batches = image_batches(
        images, batch_size, shuffle_buffer=shuffle_buffer, seed=seed, repeat=repeat, cache=cache
    )

    def augment(index, batch):
        return augmenter(batch, training=True, seed=tf.stack([tf.constant(base, tf.int64), index]))

    return (
        batches.enumerate()
        .map(augment, num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )
