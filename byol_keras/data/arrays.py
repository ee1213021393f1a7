"""Sources held in memory: scikit-learn's embedded digits and keras.datasets-style `.npz` files."""

import os
import zipfile

import numpy as np

from byol_keras.data.source import (
    ImageSource,
    array_keys_and_decode,
    array_to_uint8,
    example_ids,
    labels_to_int32,
)
from byol_keras.errors import UsageError, first_line

DIGITS_TEST_FRACTION = 0.2
DIGITS_SEED = 0


def load_digits_source(split: str, image_size: int) -> ImageSource:
    """Loads scikit-learn's 1,797 handwritten 8x8 digits, embedded, so nothing is downloaded.

    `split` is "train" or "test" (a stratified 80/20 split with a fixed seed,
    in the original order) or "all". Grey levels 0..16 become 0..255.

    ```python
    source = load_digits_source("train", image_size=16)
    assert source.num_examples == 1437
    ```
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    indices = np.arange(len(digits.target))
    if split in ("train", "test"):
        train, test = train_test_split(
            indices,
            test_size=DIGITS_TEST_FRACTION,
            stratify=digits.target,
            random_state=DIGITS_SEED,
        )
        indices = np.sort(train if split == "train" else test)
    elif split != "all":
        raise UsageError(f"data.split: digits has splits train, test and all, not '{split}'")
    images = np.round(digits.images[indices] * (255.0 / 16.0)).astype(np.uint8)
    labels = digits.target[indices].astype(np.int32)
    keys, decode = array_keys_and_decode(images, labels, image_size)
    return ImageSource(
        keys=keys,
        decode=decode,
        num_examples=len(indices),
        num_classes=10,
        class_names=[str(digit) for digit in range(10)],
        skipped_files=0,
        image_size=image_size,
        description=f"digits:{split} ({len(indices)} images, 10 classes)",
        example_ids=example_ids(f"digits:{index}" for index in indices),
    )


def _read_array(archive, key: str, path: str) -> np.ndarray:
    """One array of an open `.npz`; object arrays (pickles) and damaged members are refused."""
    try:
        return archive[key]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        reason = first_line(error)
        raise UsageError(
            f"data.source: cannot read array '{key}' in npz file '{path}': {reason}"
        ) from error


def load_npz_source(path: str, split: str, image_size: int) -> ImageSource:
    """Loads `x_<split>` and, when present, `y_<split>` from a keras.datasets-style `.npz` file.

    Images are (N, H, W) grey or (N, H, W, C); labels are class indices, and
    the class count is taken over both splits so that train and test agree.

    ```python
    source = load_npz_source("mnist.npz", "test", image_size=28)
    source.num_examples, source.num_classes  # 10000, 10 for the real MNIST
    ```
    """
    if split not in ("train", "test"):
        raise UsageError(f"data.split: npz files have splits train and test, not '{split}'")
    path = os.path.expanduser(path)
    if not os.path.exists(path):
        raise UsageError(f"data.source: npz file '{path}' does not exist")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise UsageError(f"data.source: cannot read npz file '{path}': {error}") from error
    with archive:
        keys = sorted(archive.files)
        if f"x_{split}" not in keys:
            found = ", ".join(keys) or "no arrays"
            raise UsageError(f"data.source: npz file '{path}' has no array 'x_{split}' ({found})")
        other_split = "test" if split == "train" else "train"
        images, raw_labels, other_labels = (
            _read_array(archive, key, path) if key in keys else None
            for key in (f"x_{split}", f"y_{split}", f"y_{other_split}")
        )

    if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] not in (1, 3, 4)):
        raise UsageError(
            f"data.source: x_{split} in '{path}' has shape {images.shape}; "
            "expected (N, H, W) or (N, H, W, C) with C in 1, 3, 4"
        )
    if len(images) == 0:
        raise UsageError(f"data.source: x_{split} in '{path}' holds no images")
    images = array_to_uint8(images, f"x_{split} in '{path}'")
    count = len(images)
    if raw_labels is None:
        labels = np.full([count], -1, np.int32)
        num_classes = None
    else:
        labels = labels_to_int32(raw_labels, count, f"y_{split} in '{path}'")
        num_classes = int(labels.max()) + 1
        if other_labels is not None and np.size(other_labels):
            other_labels = labels_to_int32(other_labels, None, f"y_{other_split} in '{path}'")
            num_classes = max(num_classes, int(other_labels.max()) + 1)
    class_names = None if num_classes is None else [str(i) for i in range(num_classes)]
    labelled = f"{num_classes} classes" if num_classes else "unlabelled"
    keys, decode = array_keys_and_decode(images, labels, image_size)
    real_path = os.path.realpath(path)
    return ImageSource(
        keys=keys,
        decode=decode,
        num_examples=count,
        num_classes=num_classes,
        class_names=class_names,
        skipped_files=0,
        image_size=image_size,
        description=f"npz:{path}:{split} ({count} images, {labelled})",
        example_ids=example_ids(f"npz:{real_path}:{split}:{index}" for index in range(count)),
    )
