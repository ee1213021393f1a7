"""The COCO layout as boxes: `coco:<path>`, for detection and, images only, for pretraining.

Layout:

    <path>/annotations/instances_<split>.json   COCO "instances" JSON
    <path>/<split>/<file_name>                  the images it lists

`split` may join splits with '+' (`train+val`). Boxes are `[x, y, w, h]` in
pixels, read as `[x, y, x + w, y + h]`. The classes are the names of the
`categories`, sorted (their union when splits are joined): an export per split
may list only the classes present, under ids of its own, so classes are matched
by name, never by id (`boxes.match_classes` puts another split on these names).
`iscrowd` boxes are kept but flagged `difficult`, so they are never scored as
positives.

Skipped and counted, never fatal: an image entry without an integer `id` and
a `file_name` inside the split folder (by name: absolute names and '..' parts
are refused, links are followed), or whose file is missing or unreadable
(the image is dropped); an annotation without an integer `image_id` of a
listed image, without a `bbox` of four finite numbers or with an `iscrowd`
other than 0 or 1 (the string "0" included), or whose box is degenerate
(w <= 0 or h <= 0) or lies entirely outside the image (the box is dropped);
an image whose `width` and `height` differ from the image as displayed, EXIF
orientation applied (the image is dropped). A box partly outside is clipped.
A missing path or JSON file, a file that is not COCO JSON, an annotation's
unknown `category_id`, a category name under two ids, a file under two image
ids, or an empty split raises `UsageError`.

```python
split = load_coco("my-coco", "val")
split.class_names[:2], split.skipped_boxes  # ['airplane', 'apple'] (sorted names), 0
```
"""

import json
import math
import os

import numpy as np

from byol_keras.data.boxes import (
    DEFAULT_LIMITS,
    AnnotatedImage,
    BoxSplit,
    finish_split,
    leaves_folder,
    split_parts,
)
from byol_keras.data.image_files import FileLimits
from byol_keras.errors import UsageError, first_line


def load_coco(
    path: str,
    split: str,
    limits: FileLimits = DEFAULT_LIMITS,
    source_key: str = "data.source",
    split_key: str = "data.split",
) -> BoxSplit:
    """Reads split `split` ('a+b' joins splits) of the COCO tree at `path` into a `BoxSplit`.

    `source_key` and `split_key` name the settings blamed in a `UsageError`.

    ```python
    load_coco("my-coco", "val").num_boxes  # or load_coco("coco2017", "val2017")
    ```
    """
    base = os.path.expanduser(path)
    if not os.path.isdir(base):
        raise UsageError(f"{source_key}: COCO tree '{base}' does not exist or is not a folder")
    images, skipped_files, skipped_boxes, declared = [], [], [], []
    for name in split_parts(split, split_key):
        # One document at a time: COCO's train JSON alone takes gigabytes once parsed.
        document = _read_json(base, name, source_key, split_key)
        categories = _categories(document, name, source_key)
        index = {category_id: k for k, category_id in enumerate(categories)}
        found, files, boxes = _split_images(base, name, document, index, source_key)
        declared.append((list(categories.values()), found))
        images += found
        skipped_files += files
        skipped_boxes += boxes
    class_names = sorted({category for names, _ in declared for category in names})
    for names, found in declared:  # from each split's own categories to the shared names
        renumber = np.array([class_names.index(category) for category in names], np.int32)
        for image in found:
            image.classes = renumber[image.classes]
    if not images and not skipped_files:
        raise UsageError(f"{split_key}: split '{split}' of COCO tree '{base}' lists no images")
    return finish_split(
        images,
        class_names,
        skipped_files,
        skipped_boxes,
        f"coco:{base} split {split}",
        limits,
        source_key,
    )


def _read_json(base: str, split: str, source_key: str, split_key: str) -> dict:
    folder = os.path.join(base, "annotations")
    json_path = os.path.join(folder, f"instances_{split}.json")
    if not os.path.isfile(json_path):
        found = sorted(
            entry.name[len("instances_") : -len(".json")]
            for entry in (os.scandir(folder) if os.path.isdir(folder) else [])
            if entry.name.startswith("instances_") and entry.name.endswith(".json")
        )
        raise UsageError(
            f"{split_key}: COCO tree '{base}' has no annotations/instances_{split}.json "
            f"(splits: {', '.join(found) or 'none'})"
        )
    try:
        with open(json_path, encoding="utf-8") as stream:
            document = json.load(stream)
    except (OSError, ValueError) as error:
        raise UsageError(f"{source_key}: cannot read '{json_path}': {first_line(error)}") from None
    if not isinstance(document, dict) or not all(
        isinstance(document.get(key), list) for key in ("images", "annotations", "categories")
    ):
        raise UsageError(
            f"{source_key}: '{json_path}' is not COCO instances JSON "
            "(needs 'images', 'annotations' and 'categories' lists)"
        )
    return document


def _categories(document: dict, split: str, source_key: str) -> dict[int, str]:
    """The name of every category by its id; a malformed one is the file's mistake."""
    categories = []
    for entry in document["categories"]:
        if not (
            isinstance(entry, dict)
            and _is_int(entry.get("id"))
            and isinstance(entry.get("name"), str)
        ):
            raise UsageError(
                f"{source_key}: instances_{split}.json has a category without an integer 'id' "
                f"and a 'name': {str(entry)[:80]}"
            )
        categories.append((entry["id"], entry["name"]))
    ids = [category_id for category_id, _ in categories]
    if not categories or len(set(ids)) != len(ids):
        raise UsageError(
            f"{source_key}: instances_{split}.json declares no categories or repeats an id"
        )
    names = [name for _, name in categories]
    # Classes are matched by name: two ids of one name would merge two classes, or lose one.
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise UsageError(
            f"{source_key}: instances_{split}.json declares the category name "
            f"{repeated[0]!r} under more than one id"
        )
    return dict(categories)


def _split_images(base: str, split: str, document: dict, index: dict, source_key: str):
    """The split's `AnnotatedImage`s, and (name, reason) of the images and boxes skipped."""
    entries, skipped_files = _image_entries(base, split, document, source_key)
    skipped_boxes = []
    for position, entry in enumerate(document["annotations"]):
        image_id = entry.get("image_id") if isinstance(entry, dict) else None
        if not _is_int(image_id) or image_id not in entries:
            where = f"{split} annotation #{position}"
            skipped_boxes.append((where, "no image_id of a listed image"))
            continue
        if entries[image_id] is None:  # its image is skipped, and counted there
            continue
        category = entry.get("category_id")
        if not _is_int(category) or category not in index:
            raise UsageError(
                f"{source_key}: annotation #{position} of instances_{split}.json has "
                f"category_id {category!r}, which is not among its categories"
            )
        bbox = entry.get("bbox")
        name = entries[image_id][1]
        if not (
            isinstance(bbox, list)
            and len(bbox) == 4
            and all(_is_number(value) and math.isfinite(value) for value in bbox)
        ):
            skipped_boxes.append((name, "bbox is not four finite numbers"))
        elif bbox[2] <= 0 or bbox[3] <= 0:
            skipped_boxes.append((name, "degenerate (w <= 0 or h <= 0)"))
        elif not (_is_int(crowd := entry.get("iscrowd", 0)) and crowd in (0, 1)):
            skipped_boxes.append((name, "iscrowd is not 0 or 1"))  # "0" is no 0: no guess
        else:
            x, y, w, h = (float(value) for value in bbox)
            entries[image_id][2].append(([x, y, x + w, y + h], index[category], crowd == 1))
    images = [
        AnnotatedImage(
            path=image_path,
            name=file_name,
            boxes=np.array([b for b, _, _ in boxes], np.float64).reshape(-1, 4),
            classes=np.array([k for _, k, _ in boxes], np.int32),
            difficult=np.array([c for _, _, c in boxes], bool),
            declared_size=declared_size,
        )
        for image_path, file_name, boxes, declared_size in filter(None, entries.values())
    ]
    return images, skipped_files, skipped_boxes


def _image_entries(base: str, split: str, document: dict, source_key: str):
    """Each image id's (path, file_name, [], declared size), or None when its file is missing;
    and (name, reason) of the entries skipped. A file listed under two ids is refused: its
    boxes would be counted twice."""
    folder = os.path.join(base, split)
    entries, skipped_files, ids_by_file = {}, [], {}
    for position, entry in enumerate(document["images"]):
        file_name = entry.get("file_name") if isinstance(entry, dict) else None
        if not (isinstance(file_name, str) and file_name and _is_int(entry.get("id"))):
            skipped_files.append((f"{split} image #{position}", "no integer id and file_name"))
            continue
        image_path = os.path.join(folder, file_name)
        earlier = ids_by_file.setdefault(os.path.normpath(file_name), entry["id"])
        if leaves_folder(file_name):
            skipped_files.append((file_name, "file_name points outside the split folder"))
        elif entry["id"] in entries:
            skipped_files.append((file_name, f"repeats image id {entry['id']}"))
        elif earlier != entry["id"]:
            raise UsageError(
                f"{source_key}: instances_{split}.json lists the file {file_name!r} under two "
                f"image ids, {earlier} and {entry['id']}"
            )
        elif not os.path.isfile(image_path):
            skipped_files.append((file_name, f"no image in {split}/"))
            entries[entry["id"]] = None
        else:
            entries[entry["id"]] = (image_path, file_name, [], _declared_size(entry))
    return entries, skipped_files


def _declared_size(entry: dict) -> tuple[int, int] | None:
    """An image entry's (height, width); None unless both are positive integers."""
    height, width = entry.get("height"), entry.get("width")
    if _is_int(height) and _is_int(width) and height > 0 and width > 0:
        return height, width
    return None


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
