"""The PASCAL VOC layout as boxes: `voc:<path>`, for detection and, images only, for pretraining.

Layout (that of BCCD in `../shared/data/bccd-voc.tar.gz`):

    <path>/JPEGImages/<id>.jpg
    <path>/Annotations/<id>.xml        <object><name>, <bndbox> xmin ymin xmax ymax, <difficult>
    <path>/ImageSets/Main/<split>.txt  one id a line (any split name; `a+b` joins splits)

VOC corners are 1-based and inclusive; they become `[xmin - 1, ymin - 1,
xmax, ymax]`, as the VOC devkit reads them, so that a scene gives the same
box as in COCO's `[x, y, w, h]`. The class names are the sorted union of
`<name>` over the annotations of every split, so that all splits share one
index (the folder source's rule).

Skipped and counted, never fatal: an id whose XML is missing or unparsable,
or whose image is missing or unreadable (the image is dropped); an object
without a parsable name and box, or whose box is degenerate (xmax <= xmin or
ymax <= ymin, as read from the file), or lies entirely outside the image (the
box is dropped); an image whose `<size>` differs from the image as displayed,
EXIF orientation applied (the image is dropped). A box partly outside is
clipped. A missing path, a split without its list, an empty split, or an id
that reaches outside the tree (absolute, or with a '..' part) raises
`UsageError`.

```python
split = load_voc("bccd", "train+val")
split.class_names, len(split)  # ['Platelets', 'RBC', 'WBC'], 292 in BCCD
```
"""

import math
import os
import xml.etree.ElementTree as ElementTree
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from byol_keras.data.boxes import (
    DEFAULT_LIMITS,
    AnnotatedImage,
    BoxSplit,
    finish_split,
    leaves_folder,
    split_parts,
)
from byol_keras.data.image_files import IMAGE_EXTENSIONS, FileLimits
from byol_keras.errors import UsageError, first_line

_CORNERS = ("xmin", "ymin", "xmax", "ymax")


def load_voc(
    path: str,
    split: str,
    limits: FileLimits = DEFAULT_LIMITS,
    source_key: str = "data.source",
    split_key: str = "data.split",
) -> BoxSplit:
    """Reads split `split` ('a+b' joins splits) of the VOC tree at `path` into a `BoxSplit`.

    `source_key` and `split_key` name the settings blamed in a `UsageError`.

    ```python
    load_voc("bccd", "train+val").num_boxes  # or load_voc("VOCdevkit/VOC2007", "trainval")
    ```
    """
    base = os.path.expanduser(path)
    lists = _split_lists(base, source_key)
    ids = []
    for name in split_parts(split, split_key):
        if name not in lists:
            raise UsageError(
                f"{split_key}: VOC tree '{base}' has no ImageSets/Main/{name}.txt "
                f"(splits: {', '.join(sorted(lists)) or 'none'})"
            )
        ids += _read_ids(lists[name], source_key)
    ids = list(dict.fromkeys(ids))
    if not ids:
        raise UsageError(f"{split_key}: split '{split}' of VOC tree '{base}' lists no image ids")
    listed = (_read_ids(listing, source_key) for listing in lists.values())
    every_id = sorted(set(ids).union(*listed))
    with ThreadPoolExecutor(max_workers=8) as pool:
        parsed = dict(zip(every_id, pool.map(lambda i: _parse(base, i), every_id), strict=True))
    class_names = sorted(
        {
            name
            for annotation in parsed.values()
            if not isinstance(annotation, str)
            for name, *_ in annotation[0]
            if name
        }
    )
    index = {name: i for i, name in enumerate(class_names)}
    images, skipped_files, skipped_boxes = [], [], []
    for image_id in ids:
        image_path = _image_path(base, image_id)
        if isinstance(parsed[image_id], str):
            skipped_files.append((image_id, parsed[image_id]))
            continue
        objects, declared_size = parsed[image_id]
        if image_path is None:
            skipped_files.append((image_id, "no image in JPEGImages"))
            continue
        good = []
        for name, corners, difficult, problem in objects:
            if problem:
                skipped_boxes.append((image_id, problem))
            else:
                good.append((index[name], corners, difficult))
        images.append(
            AnnotatedImage(
                path=image_path,
                name=image_id,
                boxes=np.array([c for _, c, _ in good], np.float64).reshape(-1, 4),
                classes=np.array([k for k, _, _ in good], np.int32),
                difficult=np.array([d for _, _, d in good], bool),
                declared_size=declared_size,
            )
        )
    return finish_split(
        images,
        class_names,
        skipped_files,
        skipped_boxes,
        f"voc:{base} split {split}",
        limits,
        source_key,
    )


def voc_box(xmin: float, ymin: float, xmax: float, ymax: float) -> list[float]:
    """VOC's 1-based inclusive corners as `[x0, y0, x1, y1]`, 0-based with an exclusive end.

    The VOC devkit's reading: a box over pixels 1..10 covers 10 pixels, `[0, 10]`.

    ```python
    voc_box(1, 1, 10, 20)  # [0.0, 0.0, 10.0, 20.0]
    ```
    """
    return [float(xmin) - 1.0, float(ymin) - 1.0, float(xmax), float(ymax)]


def _split_lists(base: str, source_key: str) -> dict[str, str]:
    if not os.path.isdir(base):
        raise UsageError(f"{source_key}: VOC tree '{base}' does not exist or is not a folder")
    main = os.path.join(base, "ImageSets", "Main")
    if not os.path.isdir(main):
        raise UsageError(f"{source_key}: '{base}' is not a VOC tree (no ImageSets/Main folder)")
    return {
        entry.name[: -len(".txt")]: entry.path
        for entry in os.scandir(main)
        if entry.name.endswith(".txt") and not entry.name.startswith(".")
    }


def _read_ids(listing: str, source_key: str) -> list[str]:
    """The first word of each non-blank line (VOC's per-class lists add a 1/-1 column).

    An id that reaches outside the tree by name is refused: it would read files anywhere.
    """
    with open(listing, encoding="utf-8", errors="replace") as lines:
        ids = [line.split()[0] for line in lines if line.strip()]
    for image_id in ids:
        if leaves_folder(image_id):
            raise UsageError(
                f"{source_key}: {listing} lists the image id {image_id!r}, which reaches "
                "outside the VOC tree (absolute, or with a '..' part)"
            )
    return ids


def _image_path(base: str, image_id: str) -> str | None:
    folder = os.path.join(base, "JPEGImages")
    for extension in IMAGE_EXTENSIONS:
        candidate = os.path.join(folder, image_id + extension)
        if os.path.isfile(candidate):
            return candidate
    return None


def _parse(base: str, image_id: str):
    """The objects of `<id>.xml` as (name, corners, difficult, problem) and its `<size>` as
    (height, width) or None, or why the file is unusable."""
    xml_path = os.path.join(base, "Annotations", image_id + ".xml")
    if not os.path.isfile(xml_path):
        return "no annotation file"
    try:
        root = ElementTree.parse(xml_path).getroot()
    except Exception as error:  # any failure means the file is unusable
        return f"unparsable XML: {first_line(error)}"
    return [_parse_object(element) for element in root.iter("object")], _declared_size(root)


def _declared_size(root) -> tuple[int, int] | None:
    """`<size>` as (height, width); None when absent, unparsable or 0 (some tools write 0)."""
    try:
        height, width = (int(root.findtext(f"size/{key}")) for key in ("height", "width"))
    except (TypeError, ValueError):
        return None
    return (height, width) if height > 0 and width > 0 else None


def _parse_object(element) -> tuple:
    name = (element.findtext("name") or "").strip()
    box = element.find("bndbox")
    if not name or box is None:
        return name, None, False, "object without a name or bndbox"
    try:
        corners = [float(box.findtext(key)) for key in _CORNERS]
        difficult = bool(int(float((element.findtext("difficult") or "0").strip())))
    except (TypeError, ValueError):
        return name, None, False, "unparsable bndbox or difficult"
    if not all(math.isfinite(value) for value in corners):
        return name, None, False, "unparsable bndbox or difficult"
    xmin, ymin, xmax, ymax = corners
    if xmax <= xmin or ymax <= ymin:
        return name, None, False, "degenerate (xmax <= xmin or ymax <= ymin)"
    return name, voc_box(*corners), difficult, None
