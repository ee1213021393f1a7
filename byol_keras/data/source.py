"""The `ImageSource` record and the pixel conversions that every source shares."""

import logging
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from byol_keras.errors import UsageError

log = logging.getLogger("byol_keras")

# Row `c - 1` picks the channels that make an image with `c` channels RGB:
# grey and grey+alpha repeat channel 0, RGB and RGBA keep the first three.
# NumPy, not a tf.constant: importing must not start TensorFlow's runtime, or a
# MultiWorkerMirroredStrategy made afterwards cannot configure its collectives.
_RGB_CHANNELS = np.array([[0, 0, 0], [0, 0, 0], [0, 1, 2], [0, 1, 2]], np.int32)
# Labels at or above this are refused: a class count that large is a corrupt
# label, and every class gets a name and a column of scores.
MAX_CLASSES = 100_000


@dataclass(frozen=True)
class ImageSource:
    """A finite, ordered stream of `(uint8 image [S, S, 3], int32 label)` examples.

    `label` is -1 for unlabelled examples. The dataset is unbatched and
    unshuffled; batching, shuffling and augmentation are the pipeline's job.

    ```python
    source = load_source("folder:photos/", image_size=64)
    source.num_examples, source.skipped_files, source.has_labels
    for image, label in source.dataset.take(1):
        image.shape  # (64, 64, 3)
    ```
    """

    dataset: tf.data.Dataset
    num_examples: int
    num_classes: int | None
    class_names: list[str] | None
    skipped_files: int
    description: str

    @property
    def has_labels(self) -> bool:
        """Whether the source has class labels (some examples may still be -1)."""
        return self.num_classes is not None


def to_rgb(image: tf.Tensor) -> tf.Tensor:
    """Turns an image tensor of any common dtype and 1-4 channels into uint8 RGB.

    Grey is repeated into three channels, alpha is dropped, and 16-bit or
    float images are rescaled to 0..255 the way `tf.image.convert_image_dtype`
    does (floats are taken to lie in [0, 1]).

    ```python
    to_rgb(tf.zeros([8, 8, 4], tf.uint8)).shape  # (8, 8, 3)
    ```
    """
    if image.dtype != tf.uint8:
        image = tf.image.convert_image_dtype(image, tf.uint8, saturate=True)
    if image.shape.rank == 2:
        image = image[..., tf.newaxis]
    channels = tf.shape(image)[-1]
    tf.debugging.assert_less_equal(channels, 4, message="images may have at most 4 channels")
    rgb = tf.gather(image, tf.constant(_RGB_CHANNELS)[channels - 1], axis=-1)
    rgb.set_shape([None, None, 3])
    return rgb


def resize_uint8(image: tf.Tensor, image_size: int) -> tf.Tensor:
    """Resizes a uint8 RGB image to `image_size` x `image_size` (bilinear, antialiased).

    Images that already have the target size pass through untouched, so their
    pixels stay exact.

    ```python
    resize_uint8(tf.zeros([28, 28, 3], tf.uint8), 32).shape  # (32, 32, 3)
    ```
    """
    shape = tf.shape(image)

    def resize():
        resized = tf.image.resize(image, [image_size, image_size], "bilinear", antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)

    same_size = tf.logical_and(tf.equal(shape[0], image_size), tf.equal(shape[1], image_size))
    result = tf.cond(same_size, lambda: image, resize)
    result.set_shape([image_size, image_size, 3])
    return result


def array_to_uint8(array: np.ndarray, where: str) -> np.ndarray:
    """Converts an array of pixels to uint8 0..255, refusing ranges it cannot interpret.

    uint8 passes through; bool becomes 0/255; other integers must fit 0..255
    or 0..65535 (16-bit, scaled down); floats must lie in [0, 1] or [0, 255].

    ```python
    array_to_uint8(np.array([0.0, 0.5, 1.0]), "x_train")  # [0, 128, 255]
    ```
    """
    if array.dtype == np.uint8:
        return array
    if array.dtype.kind not in "biuf":
        raise UsageError(f"data.source: {where} has dtype {array.dtype}; expected numeric pixels")
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if array.size == 0:
        return array.astype(np.uint8)
    low, high = array.min(), array.max()
    if np.issubdtype(array.dtype, np.integer):
        if low >= 0 and high <= 255:
            return array.astype(np.uint8)
        if low >= 0 and high <= 65535:
            return (array.astype(np.uint32) >> 8).astype(np.uint8)
    elif np.issubdtype(array.dtype, np.floating) and low >= 0:
        if high <= 1.0:
            return np.round(array * 255.0).astype(np.uint8)
        if high <= 255.0:
            return np.round(array).astype(np.uint8)
    raise UsageError(
        f"data.source: {where} has pixel values {low}..{high} of dtype {array.dtype}; "
        "expected uint8, 16-bit integers, or floats in [0, 1] or [0, 255]"
    )


def labels_to_int32(labels: np.ndarray, count: int | None, where: str) -> np.ndarray:
    """Checks that `labels` holds `count` (any number if None) class indices 0 <= y < MAX_CLASSES.

    Only integer dtypes are accepted: a float array may hold inf, NaN or 2.5,
    and a bool array is a mask rather than class indices, so both are refused
    rather than converted. Shapes (N,) and (N, 1) are accepted.

    ```python
    labels_to_int32(np.array([[3], [1]]), 2, "y_train")  # [3, 1]
    ```
    """
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise UsageError(
            f"data.source: {where} has dtype {labels.dtype}; expected integer class indices "
            "(convert with y.astype(int) if the values are whole numbers)"
        )
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1 or (count is not None and len(labels) != count):
        expected = f"({count},) like the images" if count is not None else "(N,) or (N, 1)"
        raise UsageError(f"data.source: {where} has shape {labels.shape}; expected {expected}")
    if labels.size:
        low, high = labels.min(), labels.max()
        if low < 0 or high >= MAX_CLASSES:
            raise UsageError(
                f"data.source: {where} holds labels {low}..{high}; expected class indices "
                f"0 <= y < {MAX_CLASSES:,}"
            )
    return labels.astype(np.int32)


def array_dataset(images: np.ndarray, labels: np.ndarray, image_size: int) -> tf.data.Dataset:
    """Makes the unbatched `(uint8 [S, S, 3], int32)` dataset of in-memory images.

    Resizing happens per element inside tf.data, so memory holds only the
    original arrays.

    ```python
    array_dataset(np.zeros([10, 28, 28], "uint8"), np.zeros([10], "int32"), 32)
    ```
    """
    if images.ndim == 3:
        images = images[..., np.newaxis]

    def convert(image, label):
        return resize_uint8(to_rgb(image), image_size), label

    dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    return dataset.map(convert, num_parallel_calls=tf.data.AUTOTUNE)
