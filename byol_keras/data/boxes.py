"""Images with object boxes, in memory: the record that `voc:` and `coco:` readers both return.

A reader (`voc.py`, `coco.py`) parses its own layout into `AnnotatedImage`s,
with its boxes already in the common convention: `[x0, y0, x1, y1]` pixels
of the original image, 0-based with an exclusive end, so a box covering
pixel columns 0..9 is `[0, 10]` (COCO's `[x, y, w, h]` read as `x, y, x + w,
y + h`, and VOC's 1-based inclusive corners as the devkit reads them). It
skips what it cannot parse and counts why. `finish_split` then does what both
formats share: it checks every image file as the folder source does (never
decoded when too large; decoded once, by the decoder training uses), takes
each image's size as displayed (EXIF orientation applied: annotation tools
box the image they show), skips an image whose declared size (VOC `<size>`,
COCO `width`/`height`) differs from it, drops boxes that lie entirely outside
their image and clips those that lie partly outside, and logs each kind of
skip once.

```python
from byol_keras.data.voc import load_voc

split = load_voc("bccd", "train")
split.class_names, len(split), split.skipped_boxes  # ['Platelets', 'RBC', 'WBC'], 205, 1 in BCCD
split.boxes[0].shape, split.classes[0].dtype        # (k, 4) float32, int32
```
"""

import os
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import PurePosixPath

import numpy as np

from byol_keras.data.image_files import FileLimits, check_files, file_keys_and_decode, read_encoded
from byol_keras.data.source import ImageSource, example_ids, log
from byol_keras.errors import UsageError

DEFAULT_LIMITS = FileLimits(max_file_mb=64.0, max_image_pixels=89_478_485)
_REPORTED_SKIPS = 5


@dataclass
class AnnotatedImage:
    """One image file and its parsed boxes, before the image is checked and the boxes clipped.

    Args:
        path: The image file.
        name: The image's id in its data set (VOC id, COCO `file_name`), for messages.
        boxes: float64 `[k, 4]` as `[x0, y0, x1, y1]`, 0-based, end exclusive.
        classes: int32 `[k]` indices into the class names.
        difficult: bool `[k]`: VOC `<difficult>` or COCO `iscrowd`; such a
            box is kept for training but is never scored as a positive.
        declared_size: `(height, width)` that the annotation states, if any.

    ```python
    AnnotatedImage("JPEGImages/a.jpg", "a", np.array([[0.0, 0.0, 10.0, 20.0]]),
                   np.array([1], np.int32), np.array([False]))
    ```
    """

    path: str
    name: str
    boxes: np.ndarray
    classes: np.ndarray
    difficult: np.ndarray
    declared_size: tuple[int, int] | None = None


@dataclass(frozen=True)
class BoxSplit:
    """A split's images and their boxes, in the original images' pixels.

    Args:
        paths: The usable image files, in the split's own order.
        names: Each image's id in its data set (VOC id, COCO `file_name`).
        sizes: int32 `[n, 2]`, each image's `(height, width)` as displayed (EXIF orientation).
        boxes: Per image, float32 `[k, 4]` `[x0, y0, x1, y1]`, 0-based, end exclusive,
            inside the image.
        classes: Per image, int32 `[k]` indices into `class_names`.
        difficult: Per image, bool `[k]`: VOC `<difficult>` or COCO `iscrowd`.
        class_names: The classes: for VOC the same list for every split of a data set, for
            COCO the split's own categories (`match_classes` matches two splits by name).
        skipped_files: Images dropped (unparsable annotation, missing or unreadable image).
        skipped_boxes: Boxes dropped (unparsable, degenerate, entirely outside the image).
        clipped_boxes: Boxes cut to their image's bounds.
        needs_pillow: Per image, whether TensorFlow cannot decode it and Pillow must.
        description: One line for logs and results.

    ```python
    from byol_keras.data.voc import load_voc

    split = load_voc("bccd", "test")
    for path, boxes, classes in zip(split.paths, split.boxes, split.classes):
        ...  # boxes [k, 4] in path's own pixels, classes [k] into split.class_names
    ```
    """

    paths: list
    names: list
    sizes: np.ndarray
    boxes: list
    classes: list
    difficult: list
    class_names: list
    skipped_files: int
    skipped_boxes: int
    clipped_boxes: int
    needs_pillow: np.ndarray
    description: str

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def num_boxes(self) -> int:
        """How many boxes the split keeps, difficult ones included."""
        return sum(len(b) for b in self.boxes)

    @property
    def example_ids(self) -> np.ndarray:
        """A uint64 id per image (its resolved path), as every `ImageSource` names its examples."""
        return example_ids(os.path.realpath(p) for p in self.paths)


def leaves_folder(name: str) -> bool:
    """Whether a file name from an annotation reaches outside its folder by name: absolute or
    with a '..' part. Links are not followed: git-annex and DVC trees link their files elsewhere.

    ```python
    assert leaves_folder("../../outside/secret") and not leaves_folder("2008/000123.jpg")
    ```
    """
    return os.path.isabs(name) or ".." in PurePosixPath(name).parts


def split_parts(split: str, split_key: str) -> list[str]:
    """The split names that `split` joins with '+', each once, in order.

    ```python
    split_parts("train+val", "data.split")  # ['train', 'val']
    ```
    """
    parts = [part.strip() for part in split.split("+")]
    if not split.strip() or not all(parts):
        raise UsageError(f"{split_key}: '{split}' is not a split name or 'a+b' join of them")
    return list(dict.fromkeys(parts))


def finish_split(
    images: list[AnnotatedImage],
    class_names: list[str],
    skipped_files: list[tuple[str, str]],
    skipped_boxes: list[tuple[str, str]],
    where: str,
    limits: FileLimits,
    source_key: str = "data.source",
) -> BoxSplit:
    """Checks the image files, clips the boxes to their images, and logs what was skipped.

    `skipped_files` and `skipped_boxes` hold `(name, reason)` for what the
    reader already dropped; `where` names the data set and split in messages.
    Raises `UsageError` when no image is usable.

    ```python
    images = [AnnotatedImage("cat.jpg", "a", np.array([[0.0, 0.0, 10.0, 20.0]]),
                             np.array([1], np.int32), np.array([False]))]
    split = finish_split(images, ["cat", "dog"], [("b", "no image")], [], "voc:pets split val",
                         DEFAULT_LIMITS)
    ```
    """
    total_files = len(images) + len(skipped_files)
    skipped_files = list(skipped_files)
    skipped_boxes = list(skipped_boxes)
    native, fallback, broken, sizes = check_files([image.path for image in images], limits)
    names_by_path = {image.path: image.name for image in images}
    skipped_files += [(names_by_path[path], why) for path, why in broken]
    kept = []
    clipped = 0
    for index in sorted(native + fallback):
        image, size = images[index], tuple(sizes[index])
        if image.declared_size not in (None, size):
            # Boxed in another frame, such as the stored one of a photo that EXIF turns.
            skipped_files.append(
                (
                    image.name,
                    "declared size differs from the image as displayed (EXIF orientation applied)",
                )
            )
            continue
        inside, cut, outside = _fit_boxes(image.boxes, size)
        skipped_boxes += [(image.name, "entirely outside the image")] * outside
        clipped += cut
        kept.append((index, size, inside))
    _log_skips(where, f"of {total_files} images", skipped_files)
    _log_skips(where, "boxes", skipped_boxes)
    if clipped:
        log.info("%s: clipped %d boxes that lie partly outside their image", where, clipped)
    if not kept:
        raise UsageError(
            f"{source_key}: {where} has no usable images ({len(skipped_files)} skipped)"
        )
    pillow = set(fallback)
    return BoxSplit(
        paths=[images[i].path for i, _, _ in kept],
        names=[images[i].name for i, _, _ in kept],
        sizes=np.array([size for _, size, _ in kept], np.int32).reshape(-1, 2),
        boxes=[images[i].boxes[inside].astype(np.float32) for i, _, inside in kept],
        classes=[images[i].classes[inside].astype(np.int32) for i, _, inside in kept],
        difficult=[images[i].difficult[inside].astype(bool) for i, _, inside in kept],
        class_names=list(class_names),
        skipped_files=len(skipped_files),
        skipped_boxes=len(skipped_boxes),
        clipped_boxes=clipped,
        needs_pillow=np.array([i in pillow for i, _, _ in kept], bool),
        description=(
            f"{where} ({len(kept)} images, {sum(int(k.sum()) for _, _, k in kept)} boxes, "
            f"{len(class_names)} classes, {len(skipped_files)} images and "
            f"{len(skipped_boxes)} boxes skipped)"
        ),
    )


def match_classes(split: BoxSplit, class_names: list[str], where: str) -> BoxSplit:
    """`split` with its class indices into `class_names`, the classes matched by name.

    Raises `UsageError` when `split` has a box of a class that `class_names`
    lacks; `where` names `split` in the message.

    ```python
    from byol_keras.data.coco import load_coco

    train = load_coco("my-coco", "train")
    test = match_classes(load_coco("my-coco", "test"), train.class_names, "the test split")
    assert test.class_names == train.class_names  # a test box of class k is train's class k
    ```
    """
    used = sorted({split.class_names[k] for classes in split.classes for k in classes})
    unknown = [name for name in used if name not in class_names]
    if unknown:
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        raise UsageError(
            f"--data: {where} has boxes of classes that the train split never had: "
            f"{', '.join(unknown[:5])}{more}"
        )
    # -1 for a class that `split` declares without a box of it: never looked up.
    renumber = np.array(
        [class_names.index(name) if name in class_names else -1 for name in split.class_names],
        np.int32,
    )
    return replace(
        split,
        classes=[renumber[classes] for classes in split.classes],
        class_names=list(class_names),
    )


def box_image_source(split: BoxSplit) -> ImageSource:
    """The images of a `BoxSplit` at their own size, as an unlabelled `ImageSource`, boxes unused.

    ```python
    from byol_keras.data.voc import load_voc

    source = box_image_source(load_voc("bccd", "train+val"))
    ```
    """
    keys, decode = file_keys_and_decode(
        split.paths,
        [-1] * len(split),
        split.needs_pillow.tolist() if split.needs_pillow.any() else None,
        None,
    )
    return ImageSource(
        keys=keys,
        decode=decode,
        num_examples=len(split),
        num_classes=None,
        class_names=None,
        skipped_files=split.skipped_files,
        description=f"{split.description}, boxes unused",
        example_ids=split.example_ids,
        key_path=_key_path,
        encoded=read_encoded,
    )


def _key_path(path, *_label_and_flag):
    return path


def _fit_boxes(boxes: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, int, int]:
    """Clips `boxes` in place to an image of `size` (h, w): (kept mask, clipped, outside)."""
    height, width = size
    outside = (
        (boxes[:, 2] <= 0) | (boxes[:, 3] <= 0) | (boxes[:, 0] >= width) | (boxes[:, 1] >= height)
    )
    bounds = np.array([width, height, width, height], np.float64)
    clipped = np.clip(boxes, 0.0, bounds)
    changed = ~outside & np.any(clipped != boxes, axis=1)
    boxes[:] = clipped
    return ~outside, int(changed.sum()), int(outside.sum())


def _log_skips(where: str, what: str, skipped: list) -> None:
    """One warning for all skips of one kind: counts by reason, then the first few names."""
    if not skipped:
        return
    reasons = Counter(why for _, why in skipped)
    summary = ", ".join(f"{count} {why}" for why, count in reasons.most_common(_REPORTED_SKIPS))
    shown = ", ".join(name for name, _ in skipped[:_REPORTED_SKIPS])
    hidden = len(skipped) - _REPORTED_SKIPS
    more = f" and {hidden} more" if hidden > 0 else ""
    log.warning("%s: skipped %d %s (%s) in %s%s", where, len(skipped), what, summary, shown, more)
