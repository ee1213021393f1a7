"""The recipe of each BYOL view (`ViewParams`), the presets, and their validation.

```python
view1, view2 = view_params("cifar", crop_area=(0.2, 1.0))
assert view2.solarize_prob == 0.2  # the paper's views differ only in blur and solarisation
```

What each number means, and which layer applies it, is in augment/augmenter.py.
"""

import dataclasses
import math
from dataclasses import dataclass
from numbers import Real

from byol_keras.errors import UsageError


@dataclass(frozen=True)
class ViewParams:
    """One view's augmentation recipe, with the paper's numbers (see the module docstring).

    ```python
    view = ViewParams(blur_prob=0.1, solarize_prob=0.2)  # the paper's second view
    ```
    """

    crop_area: tuple[float, float] = (0.08, 1.0)
    crop_aspect: tuple[float, float] = (3 / 4, 4 / 3)
    flip_prob: float = 0.5
    jitter_prob: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    grayscale_prob: float = 0.2
    blur_prob: float = 1.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    solarize_prob: float = 0.0
    # torchvision's reading of the jitter strengths learned the better CIFAR-10
    # representation (benchmarks/RESULTS.md, "Representation quality"); "byol"
    # is the official code's.
    color: str = "torchvision"


_PAPER = ViewParams(blur_prob=1.0, solarize_prob=0.0), ViewParams(blur_prob=0.1, solarize_prob=0.2)

# Digits are small grey strokes on a dark background: a flip turns a 2 into
# something that is no digit; crops under ~30% of an 8x8 digit keep a stroke or
# two, not a digit; hue, saturation and grayscale do nothing to grey images;
# solarisation maps bright strokes onto the dark background and erases them;
# a sigma of 2 px at a 3-px kernel wipes out 1-px strokes, so blur is milder.
_DIGIT_VIEW = ViewParams(
    crop_area=(0.3, 1.0),
    flip_prob=0.0,
    saturation=0.0,
    hue=0.0,
    grayscale_prob=0.0,
    blur_sigma=(0.1, 1.0),
    solarize_prob=0.0,
)

PRESETS: dict[str, tuple[ViewParams, ViewParams]] = {
    "byol": _PAPER,
    # solo-learn's and lightly's CIFAR recipes: blur at 32 px destroys what little there is.
    "cifar": tuple(dataclasses.replace(view, blur_prob=0.0) for view in _PAPER),
    "digits": (
        dataclasses.replace(_DIGIT_VIEW, blur_prob=0.5),
        dataclasses.replace(_DIGIT_VIEW, blur_prob=0.1),
    ),
}

# How the jitter strengths are read (augment/augmenter.py).
COLOR_SEMANTICS = ("byol", "torchvision")
_FIELDS = tuple(f.name for f in dataclasses.fields(ViewParams))
_PAIRED = ("blur_prob", "solarize_prob")  # the paper's only per-view differences
_RANGES = ("crop_area", "crop_aspect", "blur_sigma")
_PROBS = ("flip_prob", "jitter_prob", "grayscale_prob", "blur_prob", "solarize_prob")


def _number(key: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise UsageError(f"{key}: expected a number, got {value!r}")
    return float(value)


def _two_numbers(key: str, value, what: str) -> tuple[float, float]:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 2:
        raise UsageError(f"{key}: expected {what}, got {value!r}")
    return _number(key, value[0]), _number(key, value[1])


def _checked(params: ViewParams) -> ViewParams:
    """`params` with numbers as floats and ranges as tuples; UsageError naming a bad key."""
    values = {}
    for key in _FIELDS:
        value = getattr(params, key)
        if key == "color":
            if value not in COLOR_SEMANTICS:
                raise UsageError(
                    f"color: expected one of {', '.join(COLOR_SEMANTICS)}, got {value!r}"
                )
            values[key] = value
            continue
        if key in _RANGES:
            lo, hi = _two_numbers(key, value, "a range [low, high]")
            if lo > hi:
                raise UsageError(f"{key}: low {lo} is above high {hi}")
            if lo <= 0:
                raise UsageError(f"{key}: values must be positive, got {lo}")
            if key == "crop_area" and hi > 1:
                raise UsageError(f"crop_area: fractions of the image must be in (0, 1], got {hi}")
            values[key] = (lo, hi)
            continue
        value = _number(key, value)
        if key in _PROBS and not 0 <= value <= 1:
            raise UsageError(f"{key}: a probability must be in [0, 1], got {value}")
        if value < 0:
            raise UsageError(f"{key}: a jitter strength must be >= 0, got {value}")
        if key == "hue" and value > 0.5:
            raise UsageError(f"hue: a hue shift is at most 0.5 of the colour wheel, got {value}")
        values[key] = value
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
        if key in _PAIRED:
            first, second = _two_numbers(key, value, "a pair [view1, view2]")
            changes[0][key], changes[1][key] = first, second
        else:
            changes[0][key] = changes[1][key] = value
    return tuple(
        _checked(dataclasses.replace(view, **change))
        for view, change in zip(PRESETS[preset], changes, strict=True)
    )
