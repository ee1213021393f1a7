"""BYOL's two asymmetric views (Grill et al. 2020, Appendix B): the `BYOLAugmenter` layer.

```python
augmenter = make_augmenter("digits", image_size=16, seed=0)
pairs = pair_dataset(load_source("digits", image_size=16), augmenter, batch_size=8, seed=0)
view1, view2 = next(iter(pairs))  # each [8, 16, 16, 3] float32 in [0, 1]
assert view1.shape == view2.shape == (8, 16, 16, 3) and view1.dtype == tf.float32
```

A view is: random resized crop and horizontal flip; colour jitter with
probability `jitter_prob`, its four adjustments in a random order; grayscale;
Gaussian blur; solarisation. `ViewParams` (augment/views.py) holds the paper's numbers, with the
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
| hue h | `tf.image.adjust_hue`, per image (b) | H + d turns, d ~ U[-h, h] |
| grayscale_prob | `tf.image.rgb_to_grayscale` | after the jitter, the grey in all 3 channels |
| blur_prob, blur_sigma | `RandomGaussianBlur` (ours) | kernel ~10% of the side, odd |
| solarize_prob | `tf.where` | x < 0.5 ? x : 1 - x |

(a) KerasCV's saturation factor 0.5 means unchanged. (b) KerasCV's `RandomHue`
computes the same (to 1e-6) on the whole batch but takes twice the CPU time:
TensorFlow's batched `rgb_to_hsv` alone costs as much as `adjust_hue`'s fused
kernel run image by image. Lower bounds of 1-c and 1-s are clamped at 0.
"Ours" are in augment/layers.py.

`color` chooses how the four jitter strengths are read. `byol` (above) is
the BYOL authors' code. `torchvision` is torchvision's `ColorJitter`, which
lightly, solo-learn and most PyTorch code use: brightness multiplies by
U[1-b, 1+b], contrast and saturation blend with the grey image (its mean grey
level, or itself) by U[1-c, 1+c] and U[1-s, 1+s], hue as above, each op
clipped to [0, 1]. Both draw a fresh order of the four ops for every image.
What each choice was worth is in benchmarks/RESULTS.md ("Representation
quality"). Other differences from the official code: crop boxes are
continuous rather than whole pixels; the blur pads by reflection (theirs pads
with zeros, darkening borders).

The crop and the blur are our own layers (augment/layers.py says why KerasCV's
were not used: speed for the crop; probability, padding and seeding for the
blur). KerasCV layers draw from stateful generators, so the augmenter draws every per-sample
number itself with stateless ops keyed by one `[2]` seed per batch and passes
them to each layer's vectorised `augment_images(images, transformations)`:
pipelines stay reproducible under parallel `map`, and toggling one transform
leaves the others' random numbers alone. Probabilistic transforms run on the
whole batch and are selected per sample with `tf.where`, but for the jitter,
which runs only on the rows that take it, and in tf.data the blur too;
transforms whose probability or strength is 0 are skipped.
"""

import dataclasses

import keras
import keras_cv
import tensorflow as tf

from byol_keras.augment.layers import (
    RandomGaussianBlur,
    RandomResizedCrop,
    default_blur_kernel_size,
    draw_seed,
    fold_seed,
)
from byol_keras.augment.views import as_view_params
from byol_keras.catalog import ViewParams
from byol_keras.data.source import to_unit_range
from byol_keras.errors import UsageError


@keras.saving.register_keras_serializable(package="byol_keras")
class BYOLAugmenter(keras.layers.Layer):
    """Makes BYOL's two differently augmented views of a batch of images.

    Call it on float32 images in [0, 1] of shape `[B, H, W, 3]` (uint8 is
    scaled by 1/255); it returns `(view1, view2)`, each `[B, S, S, 3]` float32
    in [0, 1] with `S = image_size`. A `[B, 2, S, S, 3]` input is a batch of
    crop pairs already cut from the originals (`image_batches` makes them for
    images of their own sizes): only the rest of each view is applied
    (`augment_crops`). With `training=False` both views are the
    plain bilinear resize. An optional `seed` call argument (`[2]` integers)
    keys all random numbers (what `pair_dataset` passes, one per batch);
    without it the layer advances its own `keras.random.SeedGenerator`, which
    is what happens inside a compiled `train_step`.

    Args:
        image_size: Side `S` of the square views.
        view1: The first view's `ViewParams` (or a dict of its fields).
        view2: The second view's; BYOL's two views are augmented differently.
        seed: Seed of the layer's own generator, used when no `seed` is passed
            at call time.
        **kwargs: Passed to `keras.layers.Layer`.

    ```python
    augmenter = BYOLAugmenter(16, *view_params("byol"), seed=0)
    view1, view2 = augmenter(tf.random.uniform([8, 16, 16, 3]))
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

    def build(self, input_shape):
        # The sublayers hold no weights (only seed-generator states made in
        # __init__) and are invoked through augment_images, which never builds them.
        jitter = (self.brightness, self.contrast, self.saturation)
        for layer in (*self.crops, *self.blurs, *jitter):
            layer.built = True
        self.built = True

    def call(self, images, training=True, seed=None):
        images = tf.convert_to_tensor(images)
        if images.dtype.is_integer:
            images = to_unit_range(images)
        images = tf.cast(images, tf.float32)
        if images.shape.rank == 5:  # crop pairs, cut per image in tf.data
            crops = images[:, 0], images[:, 1]
            if not training:
                return crops
            seed = draw_seed(self.seed_generator) if seed is None else seed
            return self.augment_crops(crops, seed)
        if not training:
            plain = tf.image.resize(images, [self.image_size, self.image_size])
            return plain, plain
        seed = draw_seed(self.seed_generator) if seed is None else tf.cast(seed, tf.int64)
        return tuple(self._view(images, index, fold_seed(seed, index + 1)) for index in range(2))

    def augment_crops(
        self, crops: tuple, seed, in_tf_data: bool = False
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """The rest of both views on batches of crops already cut, resized and flipped.

        `crops` is `(first, second)`, float32 `[B, S, S, 3]` in [0, 1], made per
        image from the original by `augment.crops.crop_pair`; this applies the
        jitter, grayscale, blur and solarisation, with the numbers `call`
        would draw from the same `[2]` seed. `in_tf_data` makes the same views
        with less work, with ops whose shapes depend on the data (the blur on
        the rows that take it, the jitter's rows put back with
        `tf.dynamic_stitch`); XLA cannot compile those, and tf.data never does.

        ```python
        augmenter = BYOLAugmenter(16, *view_params("byol"), seed=0)
        first, second = tf.random.uniform([2, 4, 16, 16, 3])  # as crop_pair cuts them, batched
        view1, view2 = augmenter.augment_crops((first, second), seed=tf.constant([0, 5]))
        ```
        """
        seed = tf.cast(seed, tf.int64)
        return tuple(
            self._view(images, index, fold_seed(seed, index + 1), True, in_tf_data)
            for index, images in enumerate(crops)
        )

    def _view(self, images, index: int, seed, cropped: bool = False, in_tf_data: bool = False):
        params = (self.view1, self.view2)[index]
        x = images if cropped else self.crops[index](images, seed=fold_seed(seed, 0))
        batch = tf.shape(x)[:1]

        def chosen(salt, prob):
            """Which images take a transform of probability `prob`, as [B, 1, 1, 1]."""
            coin = tf.random.stateless_uniform(batch, fold_seed(seed, salt))
            return (coin < prob)[:, None, None, None]

        if params.jitter_prob >= 1.0:
            jittered = self._jitter(x, params, fold_seed(seed, 1), stitch=in_tf_data)
            x = x if jittered is None else jittered
        elif params.jitter_prob > 0:
            # The jitter is the dearest op: run it only on the rows that take it.
            coin = tf.random.stateless_uniform(batch, fold_seed(seed, 2))
            rows = tf.cast(tf.where(coin < params.jitter_prob)[:, 0], tf.int32)
            jittered = self._jitter(x, params, fold_seed(seed, 1), rows, stitch=in_tf_data)
            if jittered is not None:
                x = tf.tensor_scatter_nd_update(x, rows[:, None], jittered)
        if params.grayscale_prob > 0:
            x = tf.where(chosen(3, params.grayscale_prob), tf.image.rgb_to_grayscale(x), x)
        x = self.blurs[index](x, seed=fold_seed(seed, 4), chosen_rows_only=in_tf_data)
        if params.solarize_prob > 0:
            x = tf.where(chosen(5, params.solarize_prob) & (x >= 0.5), 1.0 - x, x)
        return tf.clip_by_value(x, 0.0, 1.0)

    def _jitter(self, x, params: ViewParams, seed, rows=None, stitch: bool = False):
        """Brightness, contrast, saturation and hue with per-sample strengths and order.

        With `rows`, only those rows of `x` are jittered and returned, each
        with the numbers it would draw in the whole batch.
        """
        batch = tf.shape(x)[:1]

        def pick(numbers):
            return numbers if rows is None else tf.gather(numbers, rows)

        def uniform(salt, lo, hi):
            return pick(tf.random.stateless_uniform(batch, fold_seed(seed, salt), lo, hi))

        def factor(salt, strength):
            return uniform(salt, max(0.0, 1.0 - strength), 1.0 + strength)

        # Each op maps (images, the rows' own numbers) to images.
        ops = []
        if params.brightness > 0:
            if params.color == "torchvision":
                ops.append((_scale_brightness, factor(0, params.brightness)))
            else:
                delta = uniform(0, -params.brightness, params.brightness)
                ops.append((self._add_brightness, delta))
        if params.contrast > 0:
            blend = _blend_contrast if params.color == "torchvision" else self._channel_contrast
            ops.append((blend, factor(1, params.contrast)))
        if params.saturation > 0:
            blend = _blend_saturation if params.color == "torchvision" else self._hsv_saturation
            ops.append((blend, factor(2, params.saturation)))
        if params.hue > 0:
            ops.append((_shift_hue, uniform(3, -params.hue, params.hue)))
        if not ops:
            return None
        # A random order per image, as torchvision's ColorJitter and the official
        # code's vmap draw it.
        noise = tf.random.stateless_uniform(tf.concat([batch, [len(ops)]], 0), fold_seed(seed, 4))
        return apply_in_order(pick(x), ops, tf.argsort(pick(noise), axis=1), stitch)

    def _add_brightness(self, images, delta):
        return self.brightness.augment_images(images, delta[:, None, None, None])

    def _channel_contrast(self, images, factors):
        return self.contrast.augment_images(images, factors[:, None, None, None])

    def _hsv_saturation(self, images, factors):
        return self.saturation.augment_images(images, factors / (1.0 + factors))

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


def apply_in_order(images, ops: list, order, stitch: bool = False):
    """Applies every `(op, numbers)` to each image, in that image's own order.

    `op(images, numbers)` transforms a batch given each image's numbers (one
    row each); `order[i]` is a permutation of the op indices for image `i`. At
    each position every image takes the op its order names, and each op runs
    only on the rows that take it, so the cost stays at one pass of each op
    over the batch rather than one per position. `stitch` puts the rows back
    together with one `tf.dynamic_stitch` per position instead of one scatter
    per op: the same images, fewer copies, but XLA cannot compile it.

    ```python
    def scale(images, factors):
        return images * factors[:, None]

    def shift(images, deltas):
        return images + deltas[:, None]

    images, factors, deltas = tf.ones([2, 3]), tf.constant([2.0, 2.0]), tf.constant([1.0, 1.0])
    order = tf.constant([[0, 1], [1, 0]])  # image 0: scale, then shift; image 1: the reverse
    out = apply_in_order(images, [(scale, factors), (shift, deltas)], order)
    assert out.numpy().tolist() == [[3.0] * 3, [4.0] * 3]
    ```
    """
    for position in range(len(ops)):
        chosen = order[:, position]
        updated, positions, parts = images, [], []
        for index, (op, numbers) in enumerate(ops):
            rows = tf.where(tf.equal(chosen, index))
            done = op(tf.gather_nd(images, rows), tf.gather_nd(numbers, rows))
            if stitch:
                positions.append(tf.cast(rows[:, 0], tf.int32))
                parts.append(done)
            else:
                updated = tf.tensor_scatter_nd_update(updated, rows, done)
        # Every row takes exactly one op at each position, so the parts cover the batch.
        images = tf.dynamic_stitch(positions, parts) if stitch else updated
    return images


def _shift_hue(images, deltas):
    """Each image's hue turned by its own delta (in turns), through HSV as torchvision does."""
    shifted = tf.map_fn(
        lambda image_delta: tf.image.adjust_hue(*image_delta),
        (images, deltas),
        fn_output_signature=tf.float32,
    )
    return tf.reshape(shifted, tf.shape(images))  # map_fn over no images loses the shape


def _grey(images):
    # ITU-R 601-2 luma, the weights of torchvision's and KerasCV's grayscale.
    return tf.reduce_sum(images * tf.constant([0.299, 0.587, 0.114]), axis=-1, keepdims=True)


def _scale_brightness(images, factors):
    """torchvision's brightness: the image times the factor, clipped to [0, 1]."""
    return tf.clip_by_value(images * factors[:, None, None, None], 0.0, 1.0)


def _blend_contrast(images, factors):
    """torchvision's contrast: a blend with the mean grey level of the image."""
    mean = tf.reduce_mean(_grey(images), axis=[1, 2, 3], keepdims=True)
    return _blend(images, mean, factors)


def _blend_saturation(images, factors):
    """torchvision's saturation: a blend with the image's own greyscale version."""
    return _blend(images, _grey(images), factors)


def _blend(images, other, factors):
    factors = factors[:, None, None, None]
    return tf.clip_by_value(factors * images + (1.0 - factors) * other, 0.0, 1.0)
