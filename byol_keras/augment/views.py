"""The two views' recipes: a preset with overrides, each number checked against its range.

`ViewParams`, the presets and every number's range are declared in
`byol_keras.catalog`, which the config reads too; what each number means, and
which layer applies it, is in augment/augmenter.py.

```python
view1, view2 = view_params("cifar", crop_area=(0.2, 1.0))
assert view2.solarize_prob == 0.2  # the paper's views differ only in blur and solarisation
```
"""

import dataclasses
import typing

from byol_keras.catalog import PRESETS, ViewParams
from byol_keras.errors import UsageError
from byol_keras.schema import check_value

_FIELDS = {f.name: f for f in dataclasses.fields(ViewParams)}
_HINTS = typing.get_type_hints(ViewParams)


def _checked(params: ViewParams) -> ViewParams:
    """`params` with numbers as floats and ranges as tuples; UsageError naming a bad key."""
    values = {}
    for key, f in _FIELDS.items():
        value = check_value(key, getattr(params, key), _HINTS[key], f.metadata)
        values[key] = tuple(value) if isinstance(value, list) else value
    return ViewParams(**values)


def as_view_params(value: ViewParams | dict) -> ViewParams:
    """`value`, ViewParams or a dict of its fields, checked; UsageError naming a bad key."""
    if isinstance(value, ViewParams):
        return _checked(value)
    if not isinstance(value, dict):
        raise UsageError(f"view: expected ViewParams or a dict, got {type(value).__name__}")
    unknown = sorted(set(value) - set(_FIELDS))
    if unknown:
        raise UsageError(f"{unknown[0]}: unknown augmentation parameter")
    return _checked(ViewParams(**value))


def view_params(preset: str = "byol", **overrides) -> tuple[ViewParams, ViewParams]:
    """The two views' recipes of a preset, with overrides applied and checked.

    A scalar or range override applies to both views; `blur_prob` and
    `solarize_prob` take a pair `[view1, view2]`.

    ```python
    view1, view2 = view_params("byol", crop_area=(0.2, 1.0), solarize_prob=(0.0, 0.1))
    ```
    """
    if preset not in PRESETS:
        raise UsageError(f"preset: unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    changes: tuple[dict, dict] = ({}, {})
    for key, value in overrides.items():
        if key not in _FIELDS:
            raise UsageError(f"{key}: unknown augmentation parameter; known: {', '.join(_FIELDS)}")
        if _FIELDS[key].metadata["paired"]:
            pair = check_value(key, value, list[float], _FIELDS[key].metadata)
            changes[0][key], changes[1][key] = pair
        else:
            changes[0][key] = changes[1][key] = value
    return tuple(
        _checked(dataclasses.replace(view, **change))
        for view, change in zip(PRESETS[preset], changes, strict=True)
    )
