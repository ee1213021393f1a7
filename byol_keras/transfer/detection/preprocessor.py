"""Letterboxing: images resized keeping their aspect to fit the detector's input, padded at the
bottom and right, their boxes scaled alike (keras-hub's preprocessor and image converter).

```python
from byol_keras.data.box_sources import load_box_split

prepared = prepare_split(load_box_split("voc:bccd", "val"), (64, 64))
prepared.images.shape, prepared.boxes.shape  # (3, 64, 64, 3), (3, most boxes, 4)
```
"""

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from byol_keras.data.boxes import BoxSplit
from byol_keras.data.image_files import pillow_decode


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
