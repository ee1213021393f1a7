"""Starting pretraining from existing weights: what `model.init_weights` loads into the backbone.

`model.init_weights` names a `.keras` file (a backbone, such as an earlier
run's `backbone.keras`, or a whole BYOL `model.keras`, whose online backbone
is taken) or a `.weights.h5` file saved from the same architecture; or
`imagenet`, which `build_backbone` passes to a `keras.applications` model
(it downloads the weights). Every tensor must match the backbone's by name
and shape, or nothing is loaded and `UsageError` lists the first differences.
The weights go into the backbone before BYOL copies it into the target, so
both networks start from them.

```python
backbone = build_backbone("tiny", 16, width=4)
load_init_weights(backbone, "runs/quickstart/backbone.keras")  # 20 tensors
```
"""

import logging
import os
import tempfile
from pathlib import Path

import h5py
import keras

from byol_keras.errors import UsageError, first_line
from byol_keras.registration import load_model

log = logging.getLogger(__name__)

IMAGENET = "imagenet"
_SHOWN_DIFFERENCES = 3


def load_init_weights(backbone: keras.Model, spec: str) -> int:
    """Loads the weights that `spec` names into `backbone`; returns how many tensors it loaded.

    Args:
        backbone: The freshly built backbone, before `BYOL` copies it.
        spec: A `.keras` or `.weights.h5` path (`imagenet` is handled when
            the backbone is built, and is refused here).

    Returns:
        The number of tensors loaded: all of the backbone's.

    ```python
    backbone = build_backbone("tiny", 16, width=4)
    backbone.save_weights("pretrained.weights.h5")
    load_init_weights(backbone, "pretrained.weights.h5")
    ```
    """
    path = Path(os.path.expanduser(spec))
    if spec == IMAGENET:
        raise UsageError("model.init_weights: imagenet weights are loaded when building")
    if not path.is_file():
        raise UsageError(f"model.init_weights: '{path}' is not a file")
    name = path.name.lower()
    if name.endswith(".weights.h5"):
        count = _load_weights_file(backbone, path)
    elif name.endswith(".keras"):
        count = _load_keras_file(backbone, path)
    else:
        raise UsageError(
            f"model.init_weights: expected a .keras or .weights.h5 file or imagenet, got '{path}'"
        )
    log.info("model.init_weights: loaded %d of %d tensors from %s", count, count, path)
    return count


def _load_keras_file(backbone: keras.Model, path: Path) -> int:
    try:
        source = load_model(path, compile=False)
    except Exception as error:  # any failure to read the file is the user's file
        raise UsageError(f"model.init_weights: cannot load '{path}': {first_line(error)}") from None
    source = getattr(source, "online_backbone", source)  # a whole BYOL model
    _check_match(
        [(weight.path, tuple(weight.shape)) for weight in source.weights],
        [(weight.path, tuple(weight.shape)) for weight in backbone.weights],
        path,
    )
    backbone.set_weights(source.get_weights())
    return len(backbone.weights)


def _load_weights_file(backbone: keras.Model, path: Path) -> int:
    """Compares the file's tensors with those the backbone itself would save, then loads."""
    with tempfile.TemporaryDirectory() as scratch:
        own = Path(scratch, "backbone.weights.h5")
        backbone.save_weights(own)
        expected = _h5_tensors(own)
    try:
        found = _h5_tensors(path)
    except OSError as error:
        raise UsageError(f"model.init_weights: cannot read '{path}': {first_line(error)}") from None
    _check_match(found, expected, path)
    backbone.load_weights(path)
    return len(expected)


def _h5_tensors(path: Path) -> list[tuple[str, tuple]]:
    tensors = []
    with h5py.File(path, "r") as file:
        file.visititems(
            lambda name, item: (
                tensors.append((name, tuple(item.shape)))
                if isinstance(item, h5py.Dataset)
                else None
            )
        )
    return tensors


def _check_match(found: list[tuple[str, tuple]], expected: list[tuple[str, tuple]], path) -> None:
    """Raises `UsageError` listing the first tensors whose names or shapes differ."""
    if found == expected:
        return
    found_shapes, expected_shapes = dict(found), dict(expected)
    differences = [
        f"{name} {list(found_shapes[name])} in the file, {list(shape)} here"
        for name, shape in expected
        if name in found_shapes and found_shapes[name] != shape
    ]
    differences += [
        f"{name} missing from the file" for name, _ in expected if name not in found_shapes
    ]
    differences += [
        f"{name} not in the backbone" for name, _ in found if name not in expected_shapes
    ]
    if not differences:
        differences = ["the same tensors in another order"]
    shown = "; ".join(differences[:_SHOWN_DIFFERENCES])
    more = (
        f"; and {len(differences) - _SHOWN_DIFFERENCES} more"
        if len(differences) > _SHOWN_DIFFERENCES
        else ""
    )
    raise UsageError(
        f"model.init_weights: '{path}' does not fit the backbone "
        f"({len(found)} tensors in the file, {len(expected)} in the backbone): {shown}{more}"
    )


__all__ = ["IMAGENET", "load_init_weights"]
