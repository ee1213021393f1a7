"""The `ImageSource` record and the pixel conversions that every source shares."""

import hashlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from byol_keras.errors import UsageError

log = logging.getLogger(__name__)

# Labels at or above this are refused: a class count that large is a corrupt
# label, and every class gets a name and a column of scores.
MAX_CLASSES = 100_000


@dataclass(frozen=True)
class ImageSource:
    """A finite stream of `(uint8 image [H, W, 3], int32 label)` examples, in order or shuffled.

    `label` is -1 for unlabelled examples. Images come either all at one
    square size `image_size` (digits, npz and tfds arrays such as CIFAR or
    MNIST, and folders of small same-size squares, resized to it as before), or
    each at its own size and aspect (`image_size` None: photos, frames), for
    views cropped from the original (`augment.pipelines.pair_dataset`).

    A source is a dataset of cheap keys (file paths, array indices) and the
    `decode` function that turns a key into an example, so that shuffling
    moves keys rather than decoded images.
    `dataset` is the examples in the source's own order (folders list their
    files sorted, hence class by class); `shuffled(seed)` draws a new seeded
    order of all the keys on every pass, before decoding. `example_ids` names
    each example (a 64-bit hash of its file path, or of its array and index),
    so that two sources can be checked for shared examples.

    Args:
        keys: A dataset of keys, one per example.
        decode: Turns a key into `(uint8 image, int32 label)`.
        num_examples: The number of examples.
        num_classes: The number of classes; `None` when unlabelled.
        class_names: A name per class; `None` when unlabelled.
        skipped_files: Files the loader could not use, for the run summary.
        description: One line for logs, e.g. `digits:train (1437 images, 10 classes)`.
        example_ids: A uint64 id per example, in `dataset` order.
        shuffle_keys: Whether `shuffled` reorders the keys; when `False` it
            returns `dataset` as is.
        key_path: Turns a key into its file path (a string tensor), for
            listings such as `byol-keras embed`'s; `None` when examples are
            not files.
        image_size: The side of every (square) image; `None` when each
            image keeps its own size.
        encoded: Turns a key into `(encoded image bytes, int32 label)`, bytes
            that `decode_rgb` reads, so that a pipeline can cache the small
            encoded files and decode only the crop of a JPEG; `None` when
            the source holds no encoded files.

    ```python
    source = load_source("folder:photos/", image_size=64)
    source.num_examples, source.skipped_files, source.has_labels
    source.image_size  # None: the photos keep their own sizes; 64 is the views'
    for image, label in source.shuffled(seed=0).take(1):
        image.shape  # (480, 640, 3), say
    ```
    """

    keys: tf.data.Dataset
    decode: Callable
    num_examples: int
    num_classes: int | None
    class_names: list[str] | None
    skipped_files: int
    description: str
    example_ids: np.ndarray
    # tfds writes its records in a hashed, class-mixed order, and shuffling its
    # examples in full would hold the whole data set in memory.
    shuffle_keys: bool = True
    key_path: Callable | None = None
    image_size: int | None = None
    encoded: Callable | None = None

    @property
    def has_labels(self) -> bool:
        """Whether the source has class labels (some examples may still be -1)."""
        return self.num_classes is not None

    @property
    def dataset(self) -> tf.data.Dataset:
        """The examples in the source's order, for evaluation and export."""
        return self._decoded(self.keys)

    def shuffled(self, seed: int | None = None, encoded: bool = False) -> tf.data.Dataset:
        """The examples in a new random order on every pass, seeded by `seed`.

        With `encoded`, the examples are `(encoded bytes, label)` (see `encoded`).

        ```python
        source = load_source("digits", image_size=16)
        first_epoch = list(source.shuffled(seed=0).take(3))
        ```
        """
        keys = self.keys
        if self.shuffle_keys:
            keys = keys.shuffle(self.num_examples, seed=seed, reshuffle_each_iteration=True)
        if encoded:
            if self.encoded is None:
                raise ValueError(f"{self.description} holds no encoded files")
            return self._decoded(keys, self.encoded)
        return self._decoded(keys)

    def _decoded(self, keys: tf.data.Dataset, decode: Callable | None = None) -> tf.data.Dataset:
        examples = keys.map(decode or self.decode, num_parallel_calls=tf.data.AUTOTUNE)
        # Every file was decoded once when the source was opened; this only
        # guards a long run against files that change or vanish meanwhile.
        return examples.ignore_errors(log_warning=True)

    def shared_examples(self, other: "ImageSource") -> int:
        """How many examples of `other` are also in this source (by `example_ids`)."""
        return int(np.isin(other.example_ids, self.example_ids).sum())


def example_ids(names: Iterable[str]) -> np.ndarray:
    """64-bit identities of examples from unique names (file paths, `array:index`).

    ```python
    ids = example_ids(["/data/cat/1.jpg", "/data/cat/2.jpg"])  # uint64 [2]
    assert ids.dtype == np.uint64 and ids.shape == (2,)
    ```
    """
    return np.fromiter(
        (
            int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little")
            for name in names
        ),
        dtype=np.uint64,
    )


def to_rgb(image: tf.Tensor) -> tf.Tensor:
    """Turns an image tensor of any common dtype and 1-4 channels into uint8 RGB.

    Grey is repeated into three channels, alpha is dropped, and 16-bit or
    float images are rescaled to 0..255 the way `tf.image.convert_image_dtype`
    does (floats are taken to lie in [0, 1]).

    ```python
    assert to_rgb(tf.zeros([8, 8, 4], tf.uint8)).shape == (8, 8, 3)
    ```
    """
    if image.dtype != tf.uint8:
        image = tf.image.convert_image_dtype(image, tf.uint8, saturate=True)
    if image.shape.rank == 2:
        image = image[..., tf.newaxis]
    channels = tf.shape(image)[-1]
    tf.debugging.assert_less_equal(channels, 4, message="images may have at most 4 channels")
    # Slices, not a gather of channel indices: a gather along the last axis
    # costs more than decoding the JPEG (benchmarks/RESULTS.md, "Data pipeline").
    rgb = tf.cond(
        channels >= 3,
        lambda: image[..., :3],
        lambda: tf.repeat(image[..., :1], 3, axis=-1),
    )
    rgb.set_shape([None, None, 3])
    return rgb


def to_unit_range(images: tf.Tensor) -> tf.Tensor:
    """Scales uint8 images to float32 in [0, 1], the input every backbone here is trained on.

    Training, evaluation and the exported serving signature all call this, so
    that the pixels a backbone sees never depend on who feeds it.

    ```python
    to_unit_range(tf.constant([0, 51, 255], tf.uint8))  # [0.0, 0.2, 1.0]
    ```
    """
    return tf.cast(images, tf.float32) / 255.0


def keep_labelled(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """Keeps the `(image, label)` examples that have a class label (unlabelled ones are -1).

    ```python
    source = load_source("folder:photos", image_size=32)
    labelled = keep_labelled(source.dataset)  # drops loose.webp: it is in no class folder
    ```
    """
    return dataset.filter(lambda image, label: label >= 0)


def decode_rgb(data: tf.Tensor) -> tf.Tensor:
    """Decodes encoded image bytes (JPEG, PNG, GIF, BMP, WebP) into uint8 RGB `[H, W, 3]`.

    ```python
    assert decode_rgb(tf.io.read_file("cat.jpg")).shape == (48, 64, 3)
    ```
    """
    return to_rgb(tf.io.decode_image(data, channels=0, expand_animations=False, dtype=tf.uint8))


def resize_uint8(image: tf.Tensor, image_size: int) -> tf.Tensor:
    """Resizes a uint8 RGB image to `image_size` x `image_size` (bilinear, antialiased).

    Images that already have the target size pass through untouched, so their
    pixels stay exact.

    ```python
    assert resize_uint8(tf.zeros([28, 28, 3], tf.uint8), 32).shape == (32, 32, 3)
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
    assert array_to_uint8(np.array([0.0, 0.5, 1.0]), "x_train").tolist() == [0, 128, 255]
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
    assert labels_to_int32(np.array([[3], [1]]), 2, "y_train").tolist() == [3, 1]
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


def array_keys_and_decode(
    images: np.ndarray, labels: np.ndarray, image_size: int
) -> tuple[tf.data.Dataset, Callable]:
    """Index keys and their decoder for in-memory images, the `ImageSource` pieces of arrays.

    Resizing happens per element inside tf.data, so memory holds only the
    original arrays.

    ```python
    keys, decode = array_keys_and_decode(np.zeros([10, 28, 28], "uint8"), np.zeros([10]), 32)
    ```
    """
    if images.ndim == 3:
        images = images[..., np.newaxis]
    pixels, targets = tf.constant(images), tf.constant(labels, tf.int32)

    def decode(index):
        return resize_uint8(to_rgb(tf.gather(pixels, index)), image_size), tf.gather(targets, index)

    return tf.data.Dataset.range(len(images)), decode
