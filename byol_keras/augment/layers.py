"""Vectorised crop and blur layers for BYOL's views, with per-sample stateless randomness.

Why not KerasCV 0.9's layers (timings: benchmarks/RESULTS.md, "Data
pipeline"): `RandomCropAndResize` maps a per-image crop over the batch with
`tf.vectorized_map`, 3–4 times slower than the one batched crop here and
far slower still when run eagerly, and cannot fold in the flip.
`RandomGaussianBlur` is vectorised the same way and somewhat faster than
ours, but it has no probability
(it needs `RandomApply` around it), pads with zeros, and, like every KerasCV
layer, draws its sigmas from a stateful generator that cannot be keyed per
batch. Core Keras's `RandomGaussianBlur` draws one sigma per
batch. Both layers here compile under XLA (`tf.image.crop_and_resize` does
not), with every sample's crop box, flip and sigma drawn separately.

Both layers take an optional `seed` call argument, a `[2]` integer tensor for
`tf.random.stateless_*` ops, so a tf.data pipeline can key each batch by its
index and stay reproducible under parallel `map`. Without it they draw a new
seed from their own `keras.random.SeedGenerator` on every call (the on-device
mode, inside `train_step`).
"""

import math

import keras
import tensorflow as tf


def fold_seed(seed, salt: int):
    """A stateless seed derived from `seed` and a constant.

    Each transform folds in its own constant, so it draws independent numbers
    from the batch's seed and keeps them when other transforms are toggled.
    """
    return tf.random.experimental.stateless_fold_in(seed, salt)


def draw_seed(generator: keras.random.SeedGenerator):
    """A `[2]` int64 stateless seed from a Keras seed generator (advances its state)."""
    return tf.cast(generator.next(), tf.int64)


def default_blur_kernel_size(image_size: int) -> int:
    """The paper's blur kernel is 23 px at 224 px, ~10% of the side; odd and at least 3."""
    return max(3, int(round(0.1 * image_size)) | 1)


def _lerp(low, high, weight):
    # This form returns `low` exactly at weight 0, so an identity crop is exact.
    return low + (high - low) * weight


@keras.saving.register_keras_serializable(package="byol_keras")
class RandomResizedCrop(keras.layers.Layer):
    """Crops a random box of random area and aspect from each image and resizes it.

    Same distribution as torchvision's `RandomResizedCrop` (area fraction
    uniform in `area`, aspect ratio log-uniform in `aspect`, 10 attempts, then
    the whole image), with an optional horizontal flip folded into the
    resampling: reading the crop's columns right to left is the flipped crop
    at no extra cost. The resize is bilinear, done as two batched gathers
    (rows, then columns), each sample with its own box. Boxes are continuous
    (not rounded to whole pixels) and sampled at half-pixel centres with edge
    clamping, so a full-image box gives `tf.image.resize(..., "bilinear")`.
    There is no antialiasing: crops larger than `size` are downsampled by
    plain bilinear interpolation.

    ```python
    crop = RandomResizedCrop(32, area=(0.08, 1.0), flip_prob=0.5, seed=0)
    views = crop(tf.random.uniform([8, 32, 32, 3]))  # [8, 32, 32, 3]
    ```
    """

    attempts = 10

    def __init__(
        self,
        size: int,
        area: tuple[float, float] = (0.08, 1.0),
        aspect: tuple[float, float] = (3 / 4, 4 / 3),
        flip_prob: float = 0.0,
        seed: int | None = None,
        **kwargs,
    ):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.size = int(size)
        self.area = tuple(float(v) for v in area)
        self.aspect = tuple(float(v) for v in aspect)
        self.flip_prob = float(flip_prob)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def sample_boxes(self, batch_size, height, width, seed):
        """Per-sample `[y0, x0, y1, x1]` crop boxes as fractions of the image, `[B, 4]`."""
        shape = tf.stack([batch_size, self.attempts])
        area = tf.random.stateless_uniform(shape, fold_seed(seed, 0), *self.area)
        log_lo, log_hi = math.log(self.aspect[0]), math.log(self.aspect[1])
        ratio = tf.exp(tf.random.stateless_uniform(shape, fold_seed(seed, 1), log_lo, log_hi))
        # The aspect is in pixels (w / h), so non-square images scale the fractions.
        pixel_ratio = tf.cast(height, tf.float32) / tf.cast(width, tf.float32)
        w = tf.sqrt(area * ratio * pixel_ratio)
        h = tf.sqrt(area / (ratio * pixel_ratio))
        valid = (w <= 1.0) & (h <= 1.0)
        first = tf.argmax(tf.cast(valid, tf.int32), axis=1, output_type=tf.int32)
        w = tf.gather(w, first, batch_dims=1)
        h = tf.gather(h, first, batch_dims=1)
        # torchvision falls back to a centre crop; for square images and
        # aspect ranges holding 1 that is the whole image, which we use always.
        found = tf.reduce_any(valid, axis=1)
        w = tf.where(found, w, 1.0)
        h = tf.where(found, h, 1.0)
        offsets = tf.random.stateless_uniform(tf.stack([batch_size, 2]), fold_seed(seed, 2))
        y0 = offsets[:, 0] * (1.0 - h)
        x0 = offsets[:, 1] * (1.0 - w)
        return tf.stack([y0, x0, y0 + h, x0 + w], axis=1)

    def crop(self, images, boxes, flip=None):
        """Resizes the `boxes` (fractions) of `images` to `size`, mirroring where `flip`."""
        shape = tf.shape(images)
        y0, x0, y1, x1 = tf.unstack(boxes, axis=1)
        rows = self._taps(y0, y1, shape[1])
        cols = self._taps(x0, x1, shape[2])
        if flip is not None:
            cols = [tf.where(flip[:, None], tf.reverse(tap, [1]), tap) for tap in cols]
        top, bottom, row_weight = rows
        images = _lerp(
            tf.gather(images, top, axis=1, batch_dims=1),
            tf.gather(images, bottom, axis=1, batch_dims=1),
            row_weight[:, :, None, None],
        )
        left, right, col_weight = cols
        return _lerp(
            tf.gather(images, left, axis=2, batch_dims=1),
            tf.gather(images, right, axis=2, batch_dims=1),
            col_weight[:, None, :, None],
        )

    def _taps(self, start, stop, extent):
        """Bilinear source indices and weights, `[B, size]` each, along one axis."""
        # Half-pixel centres clamped to the edge, as tf.image.resize samples;
        # built from gathers rather than tf.image.crop_and_resize so that XLA
        # (jit_compile, TPUs) can compile the augmenter.
        extent_f = tf.cast(extent, tf.float32)
        span = (stop - start) * extent_f
        steps = tf.range(self.size, dtype=tf.float32) + 0.5
        position = start[:, None] * extent_f + steps[None, :] * span[:, None] / self.size - 0.5
        position = tf.clip_by_value(position, 0.0, extent_f - 1.0)
        low = tf.floor(position)
        low_index = tf.cast(low, tf.int32)
        return low_index, tf.minimum(low_index + 1, extent - 1), position - low

    def call(self, images, seed=None):
        images = tf.convert_to_tensor(images, tf.float32)
        seed = draw_seed(self.seed_generator) if seed is None else seed
        shape = tf.shape(images)
        boxes = self.sample_boxes(shape[0], shape[1], shape[2], seed)
        flip = None
        if self.flip_prob > 0:
            coin = tf.random.stateless_uniform(shape[:1], fold_seed(seed, 3))
            flip = coin < self.flip_prob
        return self.crop(images, boxes, flip)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.size, self.size, input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(
            size=self.size,
            area=list(self.area),
            aspect=list(self.aspect),
            flip_prob=self.flip_prob,
            seed=self.seed,
        )
        return config


@keras.saving.register_keras_serializable(package="byol_keras")
class RandomGaussianBlur(keras.layers.Layer):
    """Blurs each image, with probability `prob`, by a Gaussian of its own random sigma.

    The blur is separable with reflect padding (as torchvision's) and runs as
    two depthwise convolutions over the whole batch: the batch is folded into
    the channel axis, so every sample gets its own kernel from one op.

    ```python
    blur = RandomGaussianBlur(kernel_size=3, sigma=(0.1, 2.0), prob=1.0, seed=0)
    blurred = blur(tf.random.uniform([8, 32, 32, 3]))
    ```
    """

    def __init__(
        self,
        kernel_size: int,
        sigma: tuple[float, float] = (0.1, 2.0),
        prob: float = 1.0,
        seed: int | None = None,
        **kwargs,
    ):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd number, got {kernel_size}")
        self.kernel_size = int(kernel_size)
        self.sigma = tuple(float(v) for v in sigma)
        self.prob = float(prob)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, seed=None, chosen_rows_only: bool = False):
        """Blurs `images`; `chosen_rows_only` blurs only the images that take it.

        The views are the same either way; blurring only the chosen rows saves
        work when `prob` is small but does not compile with XLA (the rows'
        count becomes the channel count of the folded convolution).
        """
        images = tf.convert_to_tensor(images, tf.float32)
        if self.prob <= 0.0:
            return images
        seed = draw_seed(self.seed_generator) if seed is None else seed
        batch = tf.shape(images)[0]
        sigma = tf.random.stateless_uniform([batch], fold_seed(seed, 0), *self.sigma)
        if self.prob >= 1.0:
            return self._blur(images, sigma)
        takes = tf.random.stateless_uniform([batch], fold_seed(seed, 1)) < self.prob
        if not chosen_rows_only:
            return tf.where(takes[:, None, None, None], self._blur(images, sigma), images)
        rows = tf.where(takes)

        def blur_rows():
            blurred = self._blur(tf.gather_nd(images, rows), tf.gather_nd(sigma, rows))
            return tf.tensor_scatter_nd_update(images, rows, blurred)

        return tf.cond(tf.size(rows) > 0, blur_rows, lambda: images)

    def _blur(self, images, sigma):
        """Each image blurred by a Gaussian of its own `sigma`."""
        shape = tf.shape(images)
        batch, height, width, channels = shape[0], shape[1], shape[2], shape[3]
        half = self.kernel_size // 2
        taps = tf.range(-half, half + 1, dtype=tf.float32)
        kernel = tf.exp(-tf.square(taps)[None, :] / (2.0 * tf.square(sigma)[:, None]))
        kernel /= tf.reduce_sum(kernel, axis=1, keepdims=True)  # [B, k]
        # One kernel per (sample, channel) in the folded [1, H, W, B * C] layout.
        kernel = tf.reshape(tf.repeat(kernel, channels, axis=0), [-1, self.kernel_size])
        kernel = tf.transpose(kernel)  # [k, B * C]

        folded = tf.reshape(tf.transpose(images, [1, 2, 0, 3]), [1, height, width, -1])
        folded = tf.pad(folded, [[0, 0], [half, half], [half, half], [0, 0]], mode="REFLECT")
        folded = tf.nn.depthwise_conv2d(
            folded, kernel[None, :, :, None], [1, 1, 1, 1], "VALID"
        )  # along the width
        folded = tf.nn.depthwise_conv2d(
            folded, kernel[:, None, :, None], [1, 1, 1, 1], "VALID"
        )  # along the height
        return tf.transpose(tf.reshape(folded, [height, width, batch, channels]), [2, 0, 1, 3])

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            kernel_size=self.kernel_size, sigma=list(self.sigma), prob=self.prob, seed=self.seed
        )
        return config
