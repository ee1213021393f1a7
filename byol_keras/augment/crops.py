"""Views cropped from each original image, at its own size, before batching.

For sources whose images have their own sizes (`ImageSource.image_size`
None: photos, video frames, ImageNet), each view's random resized crop is
drawn per image, in that image's pixels, with torchvision's
`RandomResizedCrop` semantics (`crop_window`), and only the crop is resized
to the view size, antialiased, so a view never passes through a squashed
thumbnail.

A JPEG is decoded once for both crops, at the coarsest of libjpeg's DCT
scales (1/1, 1/2, 1/4, 1/8) that still leaves each crop at least the view
size a side; the windows are then cut from that decode at the same scale
(their edges rounded to its pixels). Two `tf.image.decode_and_crop_jpeg`
calls, one per window, as DeepMind's input pipeline makes them, are slower
than one whole decode in TensorFlow 2.21, even on 12-megapixel photos, and
decoding those at 1/8 is 2.4-2.9x faster again (benchmarks/RESULTS.md,
"Data pipeline"). The reduced scale is libjpeg's
IDCT of the low frequencies, a filtered downsampling, after which the
antialiased resize shrinks the crop by less than 2x. The flip is applied
here too; the rest of the view (jitter, grayscale, blur, solarisation) runs
on whole batches in `BYOLAugmenter.augment_crops`.

Every random number is stateless, keyed by one `[2]` seed per image, so a
pipeline stays reproducible under parallel `map`.

```python
view1, view2 = crop_pair(tf.io.read_file("street.jpg"), view_params("byol"), 32, seed=[0, 7])
assert view1.shape == (32, 32, 3) and view1.dtype == tf.float32  # in [0, 1]
```
"""

import math

import tensorflow as tf

from byol_keras.augment.layers import fold_seed
from byol_keras.catalog import ViewParams
from byol_keras.data.source import decode_rgb

ATTEMPTS = 10  # torchvision's
# The output scales that libjpeg's DCT offers to tf.image.decode_jpeg, coarsest first.
DCT_RATIOS = (8, 4, 2, 1)


def crop_window(height, width, area: tuple, aspect: tuple, seed) -> tf.Tensor:
    """A random crop `[top, left, crop_height, crop_width]` (int32) of a `height` x `width` image.

    torchvision's `RandomResizedCrop.get_params`: up to 10 attempts, each with
    an area fraction uniform in `area` and an aspect (w / h) log-uniform in
    `aspect`, sides rounded to whole pixels; the first that fits is placed
    uniformly; if none fits, the central crop of the image clamped to the
    aspect range.

    ```python
    top, left, h, w = tf.unstack(crop_window(360, 480, (0.08, 1.0), (3 / 4, 4 / 3), [0, 1]))
    ```
    """
    seed = tf.cast(seed, tf.int64)
    height = tf.cast(height, tf.int32)
    width = tf.cast(width, tf.int32)
    height_f, width_f = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    target = height_f * width_f * tf.random.stateless_uniform([ATTEMPTS], fold_seed(seed, 0), *area)
    log_low, log_high = math.log(aspect[0]), math.log(aspect[1])
    ratio = tf.exp(tf.random.stateless_uniform([ATTEMPTS], fold_seed(seed, 1), log_low, log_high))
    crop_w = tf.cast(tf.round(tf.sqrt(target * ratio)), tf.int32)
    crop_h = tf.cast(tf.round(tf.sqrt(target / ratio)), tf.int32)
    fits = (crop_w > 0) & (crop_w <= width) & (crop_h > 0) & (crop_h <= height)
    first = tf.argmax(tf.cast(fits, tf.int32), output_type=tf.int32)
    found = tf.reduce_any(fits)

    in_ratio = width_f / height_f
    too_tall = in_ratio < aspect[0]
    too_wide = in_ratio > aspect[1]
    centre_w = tf.where(too_wide, tf.cast(tf.round(height_f * aspect[1]), tf.int32), width)
    centre_h = tf.where(too_tall, tf.cast(tf.round(width_f / aspect[0]), tf.int32), height)

    crop_h = tf.where(found, crop_h[first], centre_h)
    crop_w = tf.where(found, crop_w[first], centre_w)
    # torch.randint(0, n + 1): each of the n + 1 offsets equally likely.
    spare = tf.cast(tf.stack([height - crop_h, width - crop_w]), tf.float32)
    uniform = tf.random.stateless_uniform([2], fold_seed(seed, 2))
    placed = tf.minimum(tf.floor(uniform * (spare + 1.0)), spare)
    placed = tf.cast(placed, tf.int32)
    centred = tf.stack([height - crop_h, width - crop_w]) // 2
    offset = tf.where(found, placed, centred)
    return tf.stack([offset[0], offset[1], crop_h, crop_w])


def crop_pair(item: tf.Tensor, views: tuple, size: int, seed) -> tuple[tf.Tensor, tf.Tensor]:
    """The two views' crops of one image, resized to `size`, flipped as each view says.

    Args:
        item: Encoded image bytes (a string scalar; JPEG is decoded crop by
            crop) or a uint8 image `[H, W, 3]`.
        views: The two views' `ViewParams` (their crop and flip numbers).
        size: Side of the square views.
        seed: A `[2]` integer seed for this image.

    Returns:
        Two float32 `[size, size, 3]` crops in [0, 1].

    ```python
    image = tf.zeros([48, 64, 3], tf.uint8)
    first, second = crop_pair(image, view_params("byol"), 32, seed=[0, 3])
    ```
    """
    seed = tf.cast(seed, tf.int64)
    seeds = [fold_seed(seed, index + 1) for index in range(2)]

    def windows(shape):
        return [
            crop_window(shape[0], shape[1], view.crop_area, view.crop_aspect, view_seed)
            for view, view_seed in zip(views, seeds, strict=True)
        ]

    def from_image(image):
        return tuple(
            image[top : top + height, left : left + width]
            for top, left, height, width in (tf.unstack(w) for w in windows(tf.shape(image)[:2]))
        )

    def from_jpeg():
        boxes = windows(tf.image.extract_jpeg_shape(item)[:2])
        ratio, image = decode_jpeg_for_crops(item, boxes, size)
        return tuple(scaled_crop(image, box, ratio) for box in boxes)

    if item.dtype == tf.string:
        crops = tf.cond(tf.io.is_jpeg(item), from_jpeg, lambda: from_image(decode_rgb(item)))
    else:
        crops = from_image(item)
    return tuple(
        _resized_view(crop, view, size, fold_seed(view_seed, 3))
        for crop, view, view_seed in zip(crops, views, seeds, strict=True)
    )


def decode_jpeg_for_crops(data: tf.Tensor, boxes: list, size: int) -> tuple[tf.Tensor, tf.Tensor]:
    """JPEG `data` as uint8 RGB at the coarsest DCT scale keeping each box >= `size` a side.

    Returns `(ratio, image)`: the image is about `1 / ratio` of the original's
    height and width (libjpeg rounds up), `ratio` one of `DCT_RATIOS`.

    ```python
    data = tf.io.encode_jpeg(tf.zeros([900, 1200, 3], tf.uint8))
    ratio, image = decode_jpeg_for_crops(data, [tf.constant([0, 0, 800, 800])], 96)
    assert int(ratio) == 8 and image.shape == (113, 150, 3)  # libjpeg rounds up
    ```
    """
    smallest = tf.reduce_min(tf.stack([box[2:] for box in boxes]))
    fits = tf.stack([smallest >= ratio * size for ratio in DCT_RATIOS[:-1]] + [True])
    branch = tf.argmax(tf.cast(fits, tf.int32), output_type=tf.int32)
    decoders = [
        lambda ratio=ratio: tf.image.decode_jpeg(data, channels=3, ratio=ratio)
        for ratio in DCT_RATIOS
    ]
    return tf.gather(DCT_RATIOS, branch), tf.switch_case(branch, decoders)


def scaled_crop(image: tf.Tensor, box: tf.Tensor, ratio) -> tf.Tensor:
    """The window `box` (`[top, left, height, width]`, original pixels) of an image at `1 / ratio`.

    Edges are rounded to the nearest pixel of the scaled image, each side kept
    at least one pixel and inside the image.

    ```python
    image = tf.zeros([240, 320, 3], tf.uint8)  # a 480 x 640 photo decoded at 1/2
    crop = scaled_crop(image, tf.constant([10, 20, 200, 300]), 2)
    assert crop.shape == (100, 150, 3)
    ```
    """
    ratio = tf.cast(ratio, tf.int32)
    half = ratio // 2
    top, left, height, width = (
        (value + half) // ratio for value in tf.unstack(tf.cast(box, tf.int32))
    )
    shape = tf.shape(image)
    top = tf.minimum(top, shape[0] - 1)
    left = tf.minimum(left, shape[1] - 1)
    height = tf.clip_by_value(height, 1, shape[0] - top)
    width = tf.clip_by_value(width, 1, shape[1] - left)
    return image[top : top + height, left : left + width]


def _resized_view(crop: tf.Tensor, view: ViewParams, size: int, seed) -> tf.Tensor:
    # Antialiasing widens the bilinear kernel only when the crop shrinks; an
    # enlarged crop is plain bilinear.
    pixels = tf.image.resize(tf.cast(crop, tf.float32), [size, size], "bilinear", antialias=True)
    view_image = tf.clip_by_value(pixels / 255.0, 0.0, 1.0)
    if view.flip_prob > 0:
        coin = tf.random.stateless_uniform([], seed)
        view_image = tf.cond(
            coin < view.flip_prob, lambda: tf.reverse(view_image, [1]), lambda: view_image
        )
    view_image.set_shape([size, size, 3])
    return view_image
