"""A folder of image files as a source, with unreadable files skipped and counted.

Every file is checked once, up front, by `image_files.check_files`, and that
check alone decides what training decodes: a file that passes never fails
later. Files TensorFlow cannot decode, or would not turn as their EXIF
orientation says, are decoded by Pillow.
"""

import os
from collections.abc import Callable

import tensorflow as tf

from byol_keras.data.image_files import FileLimits, check_files, pillow_decode
from byol_keras.data.source import ImageSource, decode_rgb, example_ids, log, resize_uint8
from byol_keras.errors import UsageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
# Sub-folder names that mark a folder as split into train/test/...; asking for
# a split that is not among them is an error rather than a silent fall-back to
# the whole tree, which would mix the splits.
SPLIT_NAMES = ("train", "test", "val", "valid", "validation")
_REPORTED_SKIPS = 5


def load_folder_source(path: str, split: str, image_size: int, limits: FileLimits) -> ImageSource:
    """Loads a tree of image files; first-level sub-folders name the classes.

    `<path>/<split>` is used when it exists, else `<path>` itself. Images
    directly in the root are unlabelled (label -1). When every file is one
    square size no larger than `image_size` (CIFAR-10's 32-px JPEGs at 32),
    resizing loses nothing: images are resized to `image_size` as they are
    decoded and the source has that `image_size`. Otherwise each image keeps
    its own size (`image_size` None), so that views are cropped from the
    original.

    ```python
    limits = FileLimits(max_file_mb=64.0, max_image_pixels=10**8)
    source = load_folder_source("photos/", "test", 32, limits)  # photos/test, else photos/ itself
    assert (source.class_names, source.skipped_files) == (['cat'], 0)
    ```
    """
    base = os.path.expanduser(path)
    root = _split_root(base, split)
    files = list_image_files(root, tree=base)
    if not files:
        raise UsageError(
            f"data.source: folder '{root}' contains no image files "
            f"(looked for {' '.join(IMAGE_EXTENSIONS)})"
        )
    class_names = _class_names(base, root, files)
    class_index = {name: i for i, name in enumerate(class_names or [])}
    labels = [class_index[rel.split("/")[0]] if "/" in rel else -1 for rel in files]
    paths = [os.path.join(root, *rel.split("/")) for rel in files]

    native, fallback, skipped, sizes = check_files(paths, limits)
    if skipped:
        shown = "; ".join(
            f"{os.path.relpath(p, root)}: {why}" for p, why in skipped[:_REPORTED_SKIPS]
        )
        hidden = len(skipped) - _REPORTED_SKIPS
        more = f"; and {hidden} more" if hidden > 0 else ""
        log.warning(
            "folder '%s': skipped %d of %d image files that cannot be decoded (%s%s)",
            root,
            len(skipped),
            len(paths),
            shown,
            more,
        )
    good = sorted(native + fallback)
    if not good:
        raise UsageError(
            f"data.source: folder '{root}' has no readable images "
            f"(all {len(paths)} image files were skipped as unreadable)"
        )
    if fallback:
        log.info("folder '%s': %d image(s) decoded with Pillow", root, len(fallback))

    pillow_only = set(fallback)
    shared = set(sizes.values())
    one_size = not fallback and len(shared) == 1 and _square_within(shared.pop(), image_size)
    keys, decode = file_keys_and_decode(
        [paths[i] for i in good],
        [labels[i] for i in good],
        [i in pillow_only for i in good] if fallback else None,
        image_size if one_size else None,
    )
    labelled = f"{len(class_names)} classes" if class_names else "unlabelled"
    return ImageSource(
        keys=keys,
        decode=decode,
        num_examples=len(good),
        num_classes=len(class_names) if class_names else None,
        class_names=class_names,
        skipped_files=len(skipped),
        description=f"folder:{root} ({len(good)} images, {labelled}, {len(skipped)} skipped)",
        example_ids=example_ids(os.path.realpath(paths[i]) for i in good),
        key_path=_key_path,
        image_size=image_size if one_size else None,
        encoded=read_encoded,
    )


def _key_path(path, *_label_and_flag):
    return path


def _square_within(size: tuple[int, int], image_size: int) -> bool:
    height, width = size
    return height == width <= image_size


def _class_names(base: str, root: str, files: list[str]) -> list[str] | None:
    """The class folders of every split of `base`, sorted, so that all splits share one index.

    Numbering each split's own folders would give `test/` with classes a and c
    the indices 0 and 1, which are a and b in `train/`.
    """
    names = {rel.split("/")[0] for rel in files if "/" in rel}
    if names and root != base:
        for split in SPLIT_NAMES:
            folder = os.path.join(base, split)
            if os.path.isdir(folder) and folder != root:
                names.update(
                    entry.name
                    for entry in os.scandir(folder)
                    if entry.is_dir() and not entry.name.startswith(".")
                )
    return sorted(names) or None


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


def _split_root(path: str, split: str) -> str:
    if not os.path.exists(path):
        raise UsageError(f"data.source: folder '{path}' does not exist")
    if not os.path.isdir(path):
        raise UsageError(f"data.source: '{path}' is not a folder")
    if split and os.path.isdir(os.path.join(path, split)):
        return os.path.join(path, split)
    splits = [name for name in SPLIT_NAMES if os.path.isdir(os.path.join(path, name))]
    if splits:
        raise UsageError(
            f"data.split: folder '{path}' has no '{split}' sub-folder (found {', '.join(splits)})"
        )
    return path


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
