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

from byol_keras.config import Config, DataConfig
from byol_keras.data.arrays import load_digits_source, load_npz_source
from byol_keras.data.folder import IMAGE_EXTENSIONS, load_folder_source
from byol_keras.data.image_files import FileLimits
from byol_keras.data.source import ImageSource
from byol_keras.data.tfds_source import load_tfds_source
from byol_keras.errors import UsageError

__all__ = ["IMAGE_EXTENSIONS", "ImageSource", "load_source", "source_from_config"]

_PREFIXES = ("tfds", "folder", "npz", "segfolder", "voc", "coco")


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
    if prefix not in _PREFIXES or not rest:
        if prefix in _PREFIXES:
            raise UsageError(f"data.source: '{spec}' names no {prefix} after the colon")
        raise UsageError(
            f"data.source: unknown source '{spec}' "
            "(expected digits, tfds:<name>, folder:<path>, npz:<path>, segfolder:<path>, "
            "voc:<path> or coco:<path>)"
        )
    if prefix == "tfds":
        return load_tfds_source(rest, split, image_size, data_dir)
    if prefix == "folder":
        return load_folder_source(
            rest, split, image_size, FileLimits(max_file_mb, max_image_pixels)
        )
    # Imported here, not at the top: the transfer readers import data.folder,
    # which runs this file first, so importing them first would be circular.
    if prefix == "segfolder":
        from byol_keras.data.segfolder import load_segfolder_source

        return load_segfolder_source(rest, split, FileLimits(max_file_mb, max_image_pixels))
    if prefix in ("voc", "coco"):
        from byol_keras.data.box_sources import load_box_source

        return load_box_source(prefix, rest, split, FileLimits(max_file_mb, max_image_pixels))
    return load_npz_source(rest, split, image_size)


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
