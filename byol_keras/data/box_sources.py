"""`voc:<path>` and `coco:<path>` by their spec: boxes for detection, or images for pretraining.

```python
split = load_box_split("voc:bccd", "test")                 # a BoxSplit, boxes in pixels
source = load_box_source("coco", "my-coco", "train", DEFAULT_LIMITS)  # an ImageSource
```
"""

from byol_keras.data.boxes import DEFAULT_LIMITS, BoxSplit, box_image_source
from byol_keras.data.coco import load_coco
from byol_keras.data.image_files import FileLimits
from byol_keras.data.source import ImageSource
from byol_keras.data.voc import load_voc
from byol_keras.errors import UsageError

BOX_FORMATS = {"voc": load_voc, "coco": load_coco}


def load_box_split(
    spec: str,
    split: str,
    limits: FileLimits = DEFAULT_LIMITS,
    source_key: str = "--data",
    split_key: str = "data.split",
) -> BoxSplit:
    """Reads split `split` of a `voc:<path>` or `coco:<path>` data set into a `BoxSplit`.

    ```python
    load_box_split("coco:my-coco", "train+val").class_names
    ```
    """
    prefix, _, path = spec.partition(":")
    if prefix not in BOX_FORMATS or not path:
        raise UsageError(f"{source_key}: expected voc:<path> or coco:<path>, got {spec!r}")
    return BOX_FORMATS[prefix](path, split, limits, source_key, split_key)


def load_box_source(prefix: str, path: str, split: str, limits: FileLimits) -> ImageSource:
    """The images of a VOC (`prefix` 'voc') or COCO ('coco') split, unlabelled, for pretraining.

    The photos keep their own size: the views are cropped from them.

    ```python
    load_box_source("voc", "bccd", "train+val", DEFAULT_LIMITS).num_examples  # 292 in BCCD
    ```
    """
    return box_image_source(BOX_FORMATS[prefix](path, split, limits))
