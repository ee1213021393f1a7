"""The self-supervised methods one trainer runs: where each takes its targets, which loss it uses.

`BYOL` (model.py) is the trainer for all of them; a `Method` says only what
differs:

| method | targets | loss | predictor by default |
|---|---|---|---|
| `byol` | a target network that follows the online one by EMA (`ema`) | regression | yes |
| `simsiam` | the online projections themselves, gradient stopped (`online`) | regression | yes |
| `simclr` | none: the two views are each other's positives (`none`) | NT-Xent | no |

```python
method = get_method("simsiam")
method.targets, method.loss, method.predictor  # ("online", "regression", True)
```
"""

from dataclasses import dataclass

from byol_keras.errors import UsageError

TAU_SCHEDULES = ("cosine", "constant")


@dataclass(frozen=True)
class Method:
    """A method as the trainer sees it.

    Args:
        name: The name `model.method` takes.
        targets: `"ema"` (a separate target network, moved by EMA after each
            update), `"online"` (the online projections with stop-gradient)
            or `"none"` (no targets: the loss compares the views directly).
        loss: `"regression"` (BYOL's symmetric normalised MSE) or `"nt_xent"`.
        predictor: Whether the method has a predictor head unless told otherwise.

    ```python
    Method("byol", targets="ema", loss="regression", predictor=True)
    ```
    """

    name: str
    targets: str
    loss: str
    predictor: bool


METHODS = {
    "byol": Method("byol", targets="ema", loss="regression", predictor=True),
    "simsiam": Method("simsiam", targets="online", loss="regression", predictor=True),
    "simclr": Method("simclr", targets="none", loss="nt_xent", predictor=False),
}


def get_method(name: str) -> Method:
    """The `Method` called `name`; an unknown name raises `UsageError` listing the known ones."""
    if name not in METHODS:
        raise UsageError(f"model.method: must be one of {', '.join(METHODS)}; got {name!r}")
    return METHODS[name]
