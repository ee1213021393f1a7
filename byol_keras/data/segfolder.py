"""Images with per-pixel class masks: `segfolder:<path>`, for segmentation and for pretraining.

Layout (that of CamVid in `../shared/data/camvid-jpeg.tar.gz`):

    <path>/<split>/images/<name>.jpg|png|...   RGB images
    <path>/<split>/masks/<name>.png            one class index per pixel, same size
                                               as the image displayed (EXIF orientation)

`split` may join several splits with `+`, e.g. `train+val`. As a BYOL
source (`data.source: segfolder:<path>`) it yields the images only, unlabelled;
for `byol-keras evaluate --protocol segment` it gives (image, mask) pairs.

Bad input, as the folder source treats it: an image without a mask, a mask
whose size differs from its image's, a file that cannot be decoded, or a
mask that is not single-channel is skipped, counted and logged. A mask
holding a value that is neither a class (`0..segment.num_classes - 1`) nor
`segment.ignore_index` is a mistake in the data or the config, not a broken
file: it raises `UsageError` naming the file and the value.

```python
source = load_segfolder_source("camvid", "train+val", limits=FileLimits(64, 10**8))
split = load_segmentation_split("camvid", "test", (12, 16), num_classes=11, ignore_index=11)
assert split.images.shape == (3, 12, 16, 3) and split.masks.shape == (3, 12, 16)  # float32, uint8
```
"""

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import tensorflow as tf
from PIL import Image

from byol_keras.data.image_files import (
    IMAGE_EXTENSIONS,
    FileLimits,
    check_files,
    displayed_size,
    file_keys_and_decode,
    file_problem,
    list_image_files,
    pillow_decode,
    read_encoded,
)
from byol_keras.data.source import ImageSource, example_ids, log
from byol_keras.errors import UsageError, first_line

MASK_MODES = ("L", "P")  # 8-bit grey, or palette indices: one class index per pixel
_REPORTED_SKIPS = 5


@dataclass(frozen=True)
class SegmentationSplit:
    """A split's (image, mask) pairs in memory, at the working resolution, plus full-size masks.

    Args:
        images: float32 `[n, h, w, 3]` in [0, 1], resized with `segmentation_input`.
        masks: uint8 `[n, h, w]` class indices, resized by nearest neighbour.
        full_masks: Each mask at its own (the image's) size, for the metrics.
        names: The image files, for messages and pictures.
        skipped_files: Pairs skipped as unusable.
        description: One line for logs and results.
        example_ids: A uint64 id per pair (its image's resolved path).
    """

    images: np.ndarray
    masks: np.ndarray
    full_masks: list
    names: list
    skipped_files: int
    description: str
    example_ids: np.ndarray

    def __len__(self) -> int:
        return len(self.names)


def segmentation_input(images, size: tuple) -> tf.Tensor:
    """uint8 RGB images `[..., H, W, 3]` as the segmenter's float [0, 1] input at `size` (h, w).

    Bilinear with half-pixel centres and no antialiasing: the exported
    segmenter resizes the same way, so evaluation scores what is deployed.

    ```python
    images = segmentation_input(np.zeros([2, 360, 480, 3], np.uint8), (120, 160))
    assert images.shape == (2, 120, 160, 3)
    ```
    """
    pixels = tf.cast(images, tf.float32) / 255.0
    return tf.image.resize(pixels, size, method="bilinear")


def load_segfolder_source(path: str, split: str, limits: FileLimits) -> ImageSource:
    """The images of `segfolder:<path>` split `split` as an unlabelled `ImageSource` (for BYOL).

    Each image keeps its own size, so that BYOL's views are cropped from the frame.

    Images without a usable mask are skipped as the segmentation protocol
    skips them; only the masks' headers are read.
    """
    pairs, skipped = _pairs(path, split)
    root = _describe_root(path, split)
    total = len(pairs) + len(skipped)
    with ThreadPoolExecutor(max_workers=8) as pool:
        problems = list(pool.map(lambda pair: _header_problem(*pair, limits), pairs))
    skipped += [(pair[0], why) for pair, why in zip(pairs, problems, strict=True) if why]
    pairs = [pair for pair, why in zip(pairs, problems, strict=True) if not why]
    native, fallback, broken, _ = check_files([image for image, _ in pairs], limits)
    skipped += broken
    good = sorted(native + fallback)
    _log_skipped(root, skipped, total)
    if not good:
        raise UsageError(f"data.source: segfolder '{root}' has no usable image and mask pairs")
    paths = [pairs[i][0] for i in good]
    pillow_only = set(fallback)
    keys, decode = file_keys_and_decode(
        paths, [-1] * len(good), [i in pillow_only for i in good] if fallback else None, None
    )
    return ImageSource(
        keys=keys,
        decode=decode,
        num_examples=len(good),
        num_classes=None,
        class_names=None,
        skipped_files=len(skipped),
        description=f"segfolder:{root} ({len(good)} images, masks unused, {len(skipped)} skipped)",
        example_ids=example_ids(os.path.realpath(p) for p in paths),
        encoded=read_encoded,
    )


def load_segmentation_split(
    path: str,
    split: str,
    size: tuple,
    num_classes: int,
    ignore_index: int | None,
    limits: FileLimits | None = None,
    split_key: str = "data.split",
) -> SegmentationSplit:
    """Decodes every (image, mask) pair of a split, resized to `size` (h, w), and checks the masks.

    Raises `UsageError` for a mask value that is neither a class nor
    `ignore_index`, and when no pair is usable. `split_key` names the setting
    that chose `split`, for the message when the split does not exist.
    """
    limits = limits or FileLimits(64.0, 89_478_485)
    pairs, skipped = _pairs(path, split, split_key)
    root = _describe_root(path, split)
    total = len(pairs) + len(skipped)
    with ThreadPoolExecutor(max_workers=4) as pool:
        decoded = list(pool.map(lambda pair: _decode_pair(*pair, limits), pairs))
    allowed = np.zeros(256, bool)
    allowed[:num_classes] = True
    if ignore_index is not None and 0 <= ignore_index < 256:
        allowed[ignore_index] = True
    kept = []
    for (image_path, mask_path), result in zip(pairs, decoded, strict=True):
        if isinstance(result, str):
            skipped.append((image_path, result))
            continue
        values = np.unique(result[1])
        bad = values[~allowed[values]]
        if bad.size:
            void = "" if ignore_index is None else f" nor segment.ignore_index ({ignore_index})"
            raise UsageError(
                f"--data: mask '{mask_path}' holds the value {int(bad[0])}, which is neither a "
                f"class (0..{num_classes - 1}, segment.num_classes = {num_classes}){void}"
            )
        kept.append((image_path, *result))
    _log_skipped(root, skipped, total)
    if not kept:
        raise UsageError(f"--data: segfolder '{root}' has no usable image and mask pairs")
    images = np.concatenate(
        [segmentation_input(image[np.newaxis], size).numpy() for _, image, _ in kept]
    )
    masks = np.stack([_resize_mask(mask, size) for _, _, mask in kept])
    names = [image_path for image_path, _, _ in kept]
    return SegmentationSplit(
        images=images,
        masks=masks,
        full_masks=[mask for _, _, mask in kept],
        names=names,
        skipped_files=len(skipped),
        description=f"segfolder:{root} ({len(kept)} pairs, {len(skipped)} skipped)",
        example_ids=example_ids(os.path.realpath(p) for p in names),
    )


def split_image_ids(path: str, split: str, split_key: str = "data.split") -> np.ndarray:
    """Ids of the images of a split, from the listing alone (for the pretraining-overlap check)."""
    pairs, skipped = _pairs(path, split, split_key)
    images = [image for image, _ in pairs] + [p for p, _ in skipped]
    return example_ids(os.path.realpath(p) for p in images)


def _resize_mask(mask: np.ndarray, size: tuple) -> np.ndarray:
    if mask.shape == tuple(size):
        return mask
    resized = tf.image.resize(mask[..., np.newaxis], size, method="nearest")
    return resized.numpy()[..., 0].astype(np.uint8)


def split_folders(path: str) -> list[str]:
    """The splits of a segfolder: its subfolders that hold an `images` folder, sorted."""
    base = os.path.expanduser(path)
    if not os.path.isdir(base):
        return []
    return sorted(
        entry.name
        for entry in os.scandir(base)
        if entry.is_dir() and os.path.isdir(os.path.join(entry.path, "images"))
    )


def _pairs(path: str, split: str, split_key: str = "data.split") -> tuple[list, list]:
    """(image, mask) paths of every split in `split` ('a+b'), and (image, reason) of those
    that have no mask. `split_key` is the setting that chose `split`, blamed when it is absent."""
    base = os.path.expanduser(path)
    if not os.path.isdir(base):
        raise UsageError(f"data.source: segfolder '{base}' does not exist or is not a folder")
    pairs, skipped = [], []
    for name in split.split("+"):
        root = os.path.join(base, name)
        images_dir, masks_dir = os.path.join(root, "images"), os.path.join(root, "masks")
        if not os.path.isdir(images_dir) or not os.path.isdir(masks_dir):
            found = ", ".join(split_folders(base)) or "none"
            raise UsageError(
                f"{split_key}: segfolder '{base}' has no '{name}/images' and '{name}/masks' "
                f"folders (splits found: {found})"
            )
        masks = {
            os.path.splitext(rel)[0]: rel
            for rel in list_image_files(masks_dir)
            if rel.lower().endswith(".png")
        }
        for rel in list_image_files(images_dir):
            image = os.path.join(images_dir, rel)
            mask = masks.get(os.path.splitext(rel)[0])
            if mask is None:
                skipped.append((image, "no mask"))
            else:
                pairs.append((image, os.path.join(masks_dir, mask)))
    if not pairs and not skipped:
        raise UsageError(
            f"data.source: segfolder '{base}' split {split} contains no image files "
            f"(looked for {' '.join(IMAGE_EXTENSIONS)} in <split>/images)"
        )
    return pairs, skipped


def _header_problem(image_path: str, mask_path: str, limits: FileLimits) -> str | None:
    """Why a pair is unusable from the files' metadata and headers alone, or None."""
    for file in (image_path, mask_path):
        problem = file_problem(file, limits)
        if problem:
            return f"{os.path.basename(file)}: {problem}"
    try:
        with Image.open(image_path) as image, Image.open(mask_path) as mask:
            if mask.mode not in MASK_MODES:
                return f"mask is {mask.mode}, not single-channel 8-bit (L or P)"
            height, width = displayed_size(image)  # masks are drawn on the image as shown
            if mask.size != (width, height):
                return f"mask is {mask.size[0]}x{mask.size[1]}, image {width}x{height}"
    except Exception as error:  # any failure means the file is unusable
        return first_line(error)
    return None


def _decode_pair(image_path: str, mask_path: str, limits: FileLimits):
    """(uint8 image [H, W, 3], uint8 mask [H, W]), or why the pair is unusable."""
    problem = _header_problem(image_path, mask_path, limits)
    if problem:
        return problem
    try:
        image = pillow_decode(image_path)
    except Exception as error:  # any failure means the file is unusable
        return f"image: {first_line(error)}"
    try:
        with Image.open(mask_path) as opened:
            if opened.mode not in MASK_MODES:
                return f"mask is {opened.mode}, not single-channel 8-bit (L or P)"
            mask = np.asarray(opened).astype(np.uint8)
    except Exception as error:  # any failure means the file is unusable
        return f"mask: {first_line(error)}"
    if mask.shape != image.shape[:2]:
        return f"mask is {mask.shape[1]}x{mask.shape[0]}, image {image.shape[1]}x{image.shape[0]}"
    return image, mask


def _describe_root(path: str, split: str) -> str:
    return f"{os.path.expanduser(path)} split {split}"


def _log_skipped(root: str, skipped: list, total: int) -> None:
    if not skipped:
        return
    shown = "; ".join(f"{os.path.basename(p)}: {why}" for p, why in skipped[:_REPORTED_SKIPS])
    hidden = len(skipped) - _REPORTED_SKIPS
    more = f"; and {hidden} more" if hidden > 0 else ""
    log.warning(
        "segfolder '%s': skipped %d of %d image files (%s%s)",
        root,
        len(skipped),
        total,
        shown,
        more,
    )
