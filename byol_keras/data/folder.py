"""A folder of image files as a source, with unreadable files skipped and counted.

Every file is checked once, up front, by `image_files.check_files`, and that
check alone decides what training decodes: a file that passes never fails
later. Files TensorFlow cannot decode, or would not turn as their EXIF
orientation says, are decoded by Pillow.
"""

import os

from byol_keras.data.image_files import (
    IMAGE_EXTENSIONS,
    FileLimits,
    check_files,
    file_keys_and_decode,
    list_image_files,
    read_encoded,
)
from byol_keras.data.source import ImageSource, example_ids, log
from byol_keras.errors import UsageError

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
