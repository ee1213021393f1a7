"""Every name a config may choose, and what it stands for, without importing Keras.

The bottom of the package: the config, the resume check and the method and
augmentation code all read these tables, and this module imports nothing of
byol-keras but the error type and the field checker.

- `METHODS`: the self-supervised methods by the name `model.method` takes
  (`method_class` imports the class itself, and so Keras).
- `TAU_SCHEDULES`: the names `model.tau_schedule` takes.
- `ViewParams`, `PRESETS`, `COLOR_SEMANTICS`: one view's augmentation recipe,
  with each number's range, and the presets `augment.preset` names
  (`augment/views.py` checks and combines them; `augment/augmenter.py` says
  which layer applies each number).

```python
assert get_method("simclr").options == ("temperature",)
assert PRESETS["digits"][0].flip_prob == 0.0
model = method_class("simclr")(build_backbone("tiny", image_size=16, width=4), temperature=0.1)
```
"""

import dataclasses
import importlib
from dataclasses import dataclass

from byol_keras.errors import UsageError
from byol_keras.schema import spec

TAU_SCHEDULES = ("cosine", "constant")


@dataclass(frozen=True)
class Method:
    """A method as the config sees it.

    Args:
        name: The name `model.method` takes.
        module: The module that defines the method's class.
        class_name: The class, a `SelfSupervisedModel`.
        predictor: Whether the method has a predictor head unless told otherwise.
        options: The `model.*` keys, beyond those every method takes, that the
            class's constructor takes under the same names.

    ```python
    Method("simsiam", "byol_keras.methods.simsiam", "SimSiam", predictor=True)
    ```
    """

    name: str
    module: str
    class_name: str
    predictor: bool
    options: tuple[str, ...] = ()


METHODS = {
    "byol": Method(
        "byol", "byol_keras.methods.byol", "BYOL", True, options=("tau_base", "tau_schedule")
    ),
    "simsiam": Method("simsiam", "byol_keras.methods.simsiam", "SimSiam", True),
    "simclr": Method(
        "simclr", "byol_keras.methods.simclr", "SimCLR", False, options=("temperature",)
    ),
}


def get_method(name: str) -> Method:
    """The `Method` called `name`; an unknown name raises `UsageError` listing the known ones."""
    if name not in METHODS:
        raise UsageError(f"model.method: must be one of {', '.join(METHODS)}; got {name!r}")
    return METHODS[name]


def method_class(name: str) -> type:
    """The class of the method called `name` (imports it, and so Keras).

    ```python
    method_class("byol")  # byol_keras.methods.byol.BYOL
    ```
    """
    method = get_method(name)
    return getattr(importlib.import_module(method.module), method.class_name)


# How the jitter strengths are read (augment/augmenter.py).
COLOR_SEMANTICS = ("byol", "torchvision")
_PROBABILITY = {"low": 0.0, "high": 1.0}
_POSITIVE_RANGE = {"low": 0.0, "open_low": True, "ordered": True}


@dataclass(frozen=True)
class ViewParams:
    """One view's augmentation recipe, with the paper's numbers and each number's range.

    `blur_prob` and `solarize_prob` are the paper's only differences between
    its two views, so `augment.*` takes them as `[view1, view2]` (`paired`).

    ```python
    view = ViewParams(blur_prob=0.1, solarize_prob=0.2)  # the paper's second view
    ```
    """

    crop_area: tuple[float, float] = spec((0.08, 1.0), high=1.0, **_POSITIVE_RANGE)
    crop_aspect: tuple[float, float] = spec((3 / 4, 4 / 3), **_POSITIVE_RANGE)
    flip_prob: float = spec(0.5, **_PROBABILITY)
    jitter_prob: float = spec(0.8, **_PROBABILITY)
    brightness: float = spec(0.4, low=0.0)
    contrast: float = spec(0.4, low=0.0)
    saturation: float = spec(0.2, low=0.0)
    hue: float = spec(0.1, low=0.0, high=0.5)  # half the colour wheel
    grayscale_prob: float = spec(0.2, **_PROBABILITY)
    blur_prob: float = spec(1.0, paired=True, **_PROBABILITY)
    blur_sigma: tuple[float, float] = spec((0.1, 2.0), **_POSITIVE_RANGE)
    solarize_prob: float = spec(0.0, paired=True, **_PROBABILITY)
    # torchvision's reading of the jitter strengths learned the better CIFAR-10
    # representation (benchmarks/RESULTS.md, "Representation quality"); "byol"
    # is the official code's.
    color: str = spec("torchvision", choices=COLOR_SEMANTICS)


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
