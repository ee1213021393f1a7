"""The self-supervised methods by the name `model.method` takes, without importing Keras.

Each method is a small `keras.Model` subclass of `SelfSupervisedModel`
(`base.py`), with its own loss and its own targets:

| method | class | targets | loss | predictor |
|---|---|---|---|---|
| `byol` | `BYOL` | a target network that follows the online one by EMA | regression | yes |
| `simsiam` | `SimSiam` | the online projections, gradient stopped | regression | yes |
| `simclr` | `SimCLR` | none: the views are each other's positives | NT-Xent | no |

This registry is what the config and the resume check need (names, the
`model.*` keys each method takes, the default predictor) and stays free of
Keras, so that `byol_keras.config` loads before TensorFlow; `method_class`
imports the class itself.

```python
assert get_method("simclr").options == ("temperature",)
model = method_class("simclr")(build_backbone("tiny", image_size=16, width=4), temperature=0.1)
```
"""

import importlib
from dataclasses import dataclass

from byol_keras.errors import UsageError

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
