"""Image sources for BYOL: one spec string in, a stream of uint8 RGB images and labels out.

```python
from byol_keras.data import load_source

source = load_source("folder:~/photos", image_size=64)
print(source.description)  # folder:/home/me/photos (3 images, 1 classes, 0 skipped)
```

| spec | meaning |
|---|---|
| `digits` | scikit-learn's embedded 8x8 digits; splits train/test (stratified 80/20) or all |
| `tfds:<name>` | a tensorflow-datasets data set; `split` goes to tfds as is |
| `folder:<path>` | image files; `<path>/<split>` when it exists; class sub-folders give labels |
| `npz:<path>` | `x_train`, `y_train`, `x_test`, `y_test` arrays as in keras.datasets |
| `segfolder:<path>` | `<split>/images`, `<split>/masks`; images unlabelled; `a+b` joins splits |
| `voc:<path>` | VOC tree, `ImageSets/Main/<split>.txt`; images unlabelled; `a+b` joins splits |
| `coco:<path>` | `annotations/instances_<split>.json`, `<split>/`; images unlabelled; `a+b` joins |
"""

from collections.abc import Callable
from dataclasses import dataclass

from byol_keras.config import Config, DataConfig
from byol_keras.data.arrays import load_digits_source, load_npz_source
from byol_keras.data.box_sources import load_box_source
from byol_keras.data.folder import load_folder_source
from byol_keras.data.image_files import IMAGE_EXTENSIONS, FileLimits
from byol_keras.data.segfolder import load_segfolder_source
from byol_keras.data.source import ImageSource
from byol_keras.data.tfds_source import load_tfds_source
from byol_keras.errors import UsageError

__all__ = ["IMAGE_EXTENSIONS", "ImageSource", "load_source", "source_from_config"]


@dataclass(frozen=True)
class SourceOptions:
    """What `load_source` hands every reader besides the path and split."""

    image_size: int
    data_dir: str | None
    limits: FileLimits


@dataclass(frozen=True)
class SourceFormat:
    """One `<prefix>:<argument>` format: what follows the colon, and its reader."""

    argument: str
    load: Callable[[str, str, SourceOptions], ImageSource]


# A new format is a reader module and one row here.
FORMATS = {
    "tfds": SourceFormat(
        "name", lambda name, split, o: load_tfds_source(name, split, o.image_size, o.data_dir)
    ),
    "folder": SourceFormat(
        "path", lambda path, split, o: load_folder_source(path, split, o.image_size, o.limits)
    ),
    "npz": SourceFormat("path", lambda path, split, o: load_npz_source(path, split, o.image_size)),
    "segfolder": SourceFormat(
        "path", lambda path, split, o: load_segfolder_source(path, split, o.limits)
    ),
    "voc": SourceFormat(
        "path", lambda path, split, o: load_box_source("voc", path, split, o.limits)
    ),
    "coco": SourceFormat(
        "path", lambda path, split, o: load_box_source("coco", path, split, o.limits)
    ),
}


def load_source(
    spec: str,
    *,
    split: str = "train",
    image_size: int = 32,
    data_dir: str | None = None,
    max_file_mb: float = DataConfig.max_file_mb,
    max_image_pixels: int = DataConfig.max_image_pixels,
) -> ImageSource:
    """Opens the image source that `spec` names; `image_size` is the side of the views.

    Sources of one square size (digits, npz, CIFAR-like tfds data, folders of
    small same-size squares) resize every image to `image_size` as before;
    folders of photos, segfolders and tfds data of varying sizes hand over
    each image at its own size (`ImageSource.image_size` None), and training
    crops its views from the original (`augment.pair_dataset`).

    Unreadable image files, files that are not regular files, files over
    `max_file_mb` MiB and images whose header states more than
    `max_image_pixels` pixels are skipped, counted in `skipped_files` and
    logged; user mistakes (unknown spec, missing path, bad split, no images)
    raise `UsageError`. `data_dir` is where tensorflow-datasets keeps its data.

    Args:
        spec: `digits`, `tfds:<name>`, `folder:<path>`, `npz:<path>`, `segfolder:<path>`,
            `voc:<path>` or `coco:<path>`.
        split: The split to read (see the table above).
        image_size: Side of the views; that of the images, for sources of one size.
        data_dir: tensorflow-datasets' data folder.
        max_file_mb: Larger files are skipped.
        max_image_pixels: Images whose header states more pixels are skipped.

    Returns:
        An `ImageSource`.

    ```python
    source = load_source("digits", split="train", image_size=32)  # or "tfds:cifar10", ...
    for image, label in source.dataset.take(1):
        assert (image.dtype, image.shape) == (tf.uint8, (32, 32, 3))  # a photo folder's: their own
    ```
    """
    if not isinstance(spec, str) or not spec.strip():
        raise UsageError(f"data.source: expected a source such as 'folder:<path>', got {spec!r}")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise UsageError(f"data.image_size: expected a positive integer, got {image_size!r}")
    if not isinstance(split, str) or not split:
        raise UsageError(f"data.split: expected a split name such as 'train', got {split!r}")
    spec = spec.strip()
    if spec == "digits":
        return load_digits_source(split, image_size)
    prefix, _, rest = spec.partition(":")
    if prefix not in FORMATS or not rest:
        if prefix in FORMATS:
            raise UsageError(f"data.source: '{spec}' names no {prefix} after the colon")
        named = [f"{name}:<{form.argument}>" for name, form in FORMATS.items()]
        raise UsageError(
            f"data.source: unknown source '{spec}' "
            f"(expected digits, {', '.join(named[:-1])} or {named[-1]})"
        )
    options = SourceOptions(image_size, data_dir, FileLimits(max_file_mb, max_image_pixels))
    return FORMATS[prefix].load(rest, split, options)


def source_from_config(config: Config, spec: str, split: str) -> ImageSource:
    """`load_source(spec, split=split)` with the image size, data_dir and file limits of `config`.

    Args:
        config: the run's `Config`; its `data` section gives the image size,
            the tensorflow-datasets `data_dir` and the file limits.
        spec: the source, e.g. `config.data.source` or `config.data.val_source`.
        split: the split to open, e.g. `config.data.split`.

    Returns:
        The `ImageSource`, as `load_source` returns it.

    ```python
    config = load_config("configs/quickstart.yaml")
    source = source_from_config(config, config.data.val_source, config.data.val_split)
    ```
    """
    data = config.data
    return load_source(
        spec,
        split=split,
        image_size=data.image_size,
        data_dir=data.data_dir,
        max_file_mb=data.max_file_mb,
        max_image_pixels=data.max_image_pixels,
    )
