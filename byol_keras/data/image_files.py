"""The up-front check of image files, and Pillow's decoder for the files TensorFlow cannot turn.

Every file is checked once, up front, and that check alone decides what
training decodes. First without decoding: only regular files are read (a
FIFO or a link to a device is skipped, never opened), files over
`max_file_mb` are skipped, and the image header, which Pillow reads without
decoding, must state at most `max_image_pixels` pixels, so a decompression
bomb is never decoded. Then by the same TensorFlow decoder that training
uses, so a file that passes never fails later. Files TensorFlow cannot
decode get a second chance with Pillow (1-bit BMP, odd PNG modes); those that
Pillow reads are decoded by Pillow during training, the rest are skipped,
counted and reported.

Images are used as they are displayed: a photo whose EXIF orientation turns
it (a phone held upright) is turned, as viewers and annotation tools (LabelImg,
CVAT) show it. TensorFlow's decoders ignore EXIF, so such a file is decoded by
Pillow, which applies the orientation; every size reported is the displayed one.
"""

import os
import stat
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import tensorflow as tf
from PIL import ExifTags, Image, ImageOps

from byol_keras.data.source import decode_rgb, resize_uint8
from byol_keras.errors import first_line

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
_MEBIBYTE = 1 << 20


@dataclass(frozen=True)
class FileLimits:
    """What the up-front check accepts: file size in MiB and pixels per image (header values).

    ```python
    FileLimits(max_file_mb=64.0, max_image_pixels=89_478_485)
    ```
    """

    max_file_mb: float
    max_image_pixels: int


def check_files(
    paths: list[str], limits: FileLimits
) -> tuple[list[int], list[int], list[tuple[str, str]], dict[int, tuple[int, int]]]:
    """Splits file indices into TF-decodable, Pillow-only, and (path, reason) skipped.

    The fourth result maps each usable index to its image's (height, width) as
    displayed. A file that EXIF turns is Pillow-only: TensorFlow would not turn it.
    """
    with ThreadPoolExecutor(max_workers=8) as pool, warnings.catch_warnings():
        # Pillow warns about images over its own pixel limit; ours decides instead.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        headers = list(pool.map(lambda path: _inspect(path, limits), paths))
    candidates = [i for i, (why, turned) in enumerate(headers) if why is None and not turned]
    turned = [i for i, (why, turned) in enumerate(headers) if why is None and turned]
    skipped = [(paths[i], why) for i, (why, _) in enumerate(headers) if why is not None]

    def probe(index, path):
        data = tf.io.read_file(path)

        def jpeg_size():
            # A JPEG decoded at 1/8 scale still reads (and checks) every byte, at a
            # fraction of the cost. Its shape (at most the header's) must enter the
            # result: TensorFlow prunes a decode whose output is unused, even under
            # a control dependency, and a broken file then passes.
            scaled = tf.shape(tf.io.decode_jpeg(data, ratio=8))[:2]
            return tf.maximum(tf.image.extract_jpeg_shape(data)[:2], scaled)

        size = tf.cond(tf.io.is_jpeg(data), jpeg_size, lambda: tf.shape(decode_rgb(data))[:2])
        return index, size

    indices = tf.data.Dataset.from_tensor_slices(
        (
            tf.constant(candidates, dtype=tf.int64),
            tf.constant([os.fsencode(paths[i]) for i in candidates], dtype=tf.string),
        )
    )
    checked = indices.map(probe, num_parallel_calls=tf.data.AUTOTUNE).ignore_errors()
    native = {}
    for batch, sizes in checked.batch(4096):
        native.update(zip(batch.numpy().tolist(), map(tuple, sizes.numpy().tolist()), strict=True))
    failed = sorted([i for i in candidates if i not in native] + turned)
    with ThreadPoolExecutor(max_workers=4) as pool:
        decoded = list(pool.map(lambda i: _pillow_size(paths[i]), failed))
    sizes = dict(native)
    fallback = []
    for index, size in zip(failed, decoded, strict=True):
        if isinstance(size, str):
            skipped.append((paths[index], size))
        else:
            fallback.append(index)
            sizes[index] = size
    return sorted(native), fallback, sorted(skipped), sizes


def file_problem(path: str, limits: FileLimits) -> str | None:
    """Why `path` must not be decoded (not a regular file, too large, too many pixels), or None.

    Decides from metadata and the image header only: nothing is decoded.
    """
    return _inspect(path, limits)[0]


def _inspect(path: str, limits: FileLimits) -> tuple[str | None, bool]:
    """`file_problem`'s answer, and whether EXIF orientation turns the image."""
    try:
        # stat follows links but opens nothing, so a FIFO or a device is never read.
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):
            return f"not a regular file ({_file_kind(mode)})", False
        # O_NONBLOCK: should the file have become a FIFO since, opening it must not wait.
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as error:
        return f"cannot read: {error.strerror or error}", False
    with open(descriptor, "rb") as stream:
        info = os.fstat(stream.fileno())
        if not stat.S_ISREG(info.st_mode):
            return f"not a regular file ({_file_kind(info.st_mode)})", False
        if info.st_size == 0:
            return "empty file", False
        if info.st_size > limits.max_file_mb * _MEBIBYTE:
            return (
                f"{info.st_size / _MEBIBYTE:.1f} MiB, over the limit of "
                f"{limits.max_file_mb:g} MiB (data.max_file_mb)"
            ), False
        try:
            with Image.open(stream) as image:  # reads the header only
                width, height = image.size
                turned = exif_orientation(image) != 1
        except Image.DecompressionBombError as error:
            return f"{error} (Pillow's limit, PIL.Image.MAX_IMAGE_PIXELS)", False
        except Exception as error:  # any failure means the file is unusable
            return first_line(error), False
    if width * height > limits.max_image_pixels:
        return (
            f"{width}x{height} = {width * height:,} pixels, over the limit of "
            f"{limits.max_image_pixels:,} (data.max_image_pixels)"
        ), False
    return None, turned


def exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation of an opened image, 1 to 8; 1 (as stored) when it has none.

    ```python
    with Image.open("street.jpg") as image:
        assert exif_orientation(image) == 1  # no EXIF: shown as stored (6: turned clockwise)
    ```
    """
    try:
        value = image.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:  # unreadable EXIF: viewers, and Pillow's exif_transpose, show it as stored
        return 1
    return value if value in range(1, 9) else 1


def displayed_size(image: Image.Image) -> tuple[int, int]:
    """An opened image's (height, width) as displayed, with its EXIF orientation applied.

    ```python
    with Image.open("street.jpg") as image:  # stored 64 wide and 48 high, no EXIF
        assert displayed_size(image) == (48, 64)  # (64, 48) if its orientation were 6
    ```
    """
    width, height = image.size
    # Orientations 5 to 8 turn the image by a quarter: width and height trade places.
    return (width, height) if exif_orientation(image) >= 5 else (height, width)


def _file_kind(mode: int) -> str:
    kinds = {
        stat.S_ISDIR: "a folder",
        stat.S_ISFIFO: "a FIFO",
        stat.S_ISCHR: "a character device",
        stat.S_ISBLK: "a block device",
        stat.S_ISSOCK: "a socket",
    }
    return next((name for test, name in kinds.items() if test(mode)), "not a plain file")


def _pillow_size(path: str) -> tuple[int, int] | str:
    """The (height, width) of `path` as Pillow decodes it, or why it cannot."""
    try:
        return pillow_decode(path).shape[:2]
    except Exception as error:  # any failure means the file is unusable
        return first_line(error)


def pillow_decode(path: str) -> np.ndarray:
    """Decodes an image file with Pillow into uint8 RGB [H, W, 3], turned as EXIF says.

    16-bit grey keeps its high byte, as TensorFlow's PNG decoder does.

    ```python
    assert pillow_decode("scan.bmp").dtype == np.uint8
    ```
    """
    with Image.open(path) as opened:
        opened.load()
        image = ImageOps.exif_transpose(opened) if exif_orientation(opened) != 1 else opened
        if image.mode.startswith("I") or image.mode == "F":
            pixels = np.asarray(image).astype(np.float64)
            if image.mode.startswith("I;16") or pixels.max() > 255:
                pixels = np.floor(pixels / 256.0)
            grey = np.clip(pixels, 0, 255).astype(np.uint8)
            return np.repeat(grey[..., np.newaxis], 3, axis=-1)
        return np.asarray(image.convert("RGB"))


def list_image_files(root: str, tree: str | None = None) -> list[str]:
    """Lists the image files under `root` as sorted '/'-joined relative paths.

    Hidden files and folders are ignored. A link to a folder is followed only
    when it resolves inside `tree` (default: `root`; a folder source passes
    the folder it was given, so `train/cat` may link to `all/cat`), and each
    folder is listed once, real folders before links, so a link to `/` or a
    link loop cannot make the walk leave the data set or run forever. Names
    are listed whatever they point to; the up-front check then keeps regular
    files only (a link to a regular file may point anywhere).

    ```python
    assert list_image_files("photos/") == ['cat/1.jpg', 'cat/2.png', 'loose.webp']
    ```
    """
    boundary = os.path.realpath(tree if tree is not None else root)
    found = []
    seen = set()
    for folder, dirs, names in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:  # reached twice through links
            dirs[:] = []
            continue
        seen.add(real)
        paths = {d: os.path.join(folder, d) for d in dirs if not d.startswith(".")}
        inside = [d for d, p in paths.items() if _inside(os.path.realpath(p), boundary)]
        dirs[:] = sorted(inside, key=lambda d: (os.path.islink(paths[d]), d))
        relative = os.path.relpath(folder, root)
        prefix = "" if relative == "." else relative.replace(os.sep, "/") + "/"
        for name in names:
            if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS):
                found.append(prefix + name)
    return sorted(found)


def _inside(path: str, root: str) -> bool:
    return os.path.commonpath([path, root]) == root


def _tf_decode(path: tf.Tensor) -> tf.Tensor:
    return decode_rgb(tf.io.read_file(path))


def file_keys_and_decode(
    paths: list[str], labels: list[int], use_pillow: list[bool] | None, image_size: int | None
) -> tuple[tf.data.Dataset, Callable]:
    """Path keys and their decoder for image files, the `ImageSource` pieces of a folder.

    `use_pillow[i]` sends file i to Pillow (formats TensorFlow cannot decode);
    None decodes every file with TensorFlow. Images are resized to
    `image_size`, or keep their own size when it is None. `read_encoded`
    reads the same keys as encoded bytes.

    ```python
    keys, decode = file_keys_and_decode(["street.jpg", "photos/cat/2.png"], [0, 1], None, 32)
    ```
    """

    def decode(path, label, pillow_flag=None):
        if pillow_flag is None:
            image = _tf_decode(path)
        else:
            image = tf.cond(pillow_flag, lambda: _pillow(path), lambda: _tf_decode(path))
        return (image if image_size is None else resize_uint8(image, image_size)), label

    columns = ([os.fsencode(p) for p in paths], tf.constant(labels, tf.int32))
    if use_pillow is not None:
        # Only then does the graph hold a Python call, which would otherwise
        # stop the dataset from being serialised (tf.distribute, snapshots).
        columns += (tf.constant(use_pillow, tf.bool),)
    return tf.data.Dataset.from_tensor_slices(columns), decode


def read_encoded(path: tf.Tensor, label: tf.Tensor, pillow_flag: tf.Tensor | None = None):
    """A key of `file_keys_and_decode` as `(encoded bytes, label)`, bytes that `decode_rgb` reads.

    A file only Pillow can read (flagged by the up-front check) is decoded by
    Pillow and handed over as PNG bytes.

    ```python
    data, label = read_encoded(tf.constant("cat.jpg"), tf.constant(0))  # the file's bytes, 0
    ```
    """
    if pillow_flag is None:
        return tf.io.read_file(path), label
    data = tf.cond(
        pillow_flag, lambda: tf.io.encode_png(_pillow(path)), lambda: tf.io.read_file(path)
    )
    return data, label


def _pillow(path: tf.Tensor) -> tf.Tensor:
    image = tf.py_function(lambda p: pillow_decode(os.fsdecode(p.numpy())), [path], tf.uint8)
    image.set_shape([None, None, 3])
    return image
