"""Loads any `.keras` file byol-keras writes, by importing the modules that register its classes.

Each class that a saved file names (`byol_keras>BYOL`, the LARS optimizer,
the learning-rate schedules, the augmenter, the BatchNorm layer, the
segmenter's and the detector's layers) is registered with Keras when its
module is imported, as keras-hub does. Keras imports modules by itself only
for its own packages, so a file that names a class whose module was never
imported does not load; `load_model` imports them all first. Nothing is
registered by `import byol_keras` alone, which imports neither TensorFlow nor
Keras and hooks no other package's import.

```python
import byol_keras

model = byol_keras.load_model("runs/quickstart/model.keras")  # BYOL, SimSiam or SimCLR
backbone = byol_keras.load_model("runs/quickstart/backbone.keras", compile=False)
```
"""

import importlib
import os

import keras

from byol_keras.catalog import METHODS
from byol_keras.tasks import TASKS

# The modules whose import registers what a run's files refer to.
SERIALIZABLE_MODULES = (
    *(method.module for method in METHODS.values()),
    "byol_keras.training.lars",
    "byol_keras.training.schedules",
    "byol_keras.augment.augmenter",
    "byol_keras.nn.batchnorm",  # the backbones' and heads' BatchNorm layers
    *(task.model_module for task in TASKS.values() if task.model_module),  # segmenters, ...
)


def import_serializable() -> None:
    """Imports `SERIALIZABLE_MODULES`, so that Keras knows every class byol-keras saves."""
    for module in SERIALIZABLE_MODULES:
        importlib.import_module(module)


def load_model(path: str | os.PathLike, **kwargs) -> keras.Model:
    """`keras.saving.load_model(path, **kwargs)` once every byol-keras class is registered.

    Takes any `.keras` file a run holds: `model.keras` (a BYOL, SimSiam or
    SimCLR model), `backbone.keras`, and the segmenters and detectors under
    `eval/`.

    ```python
    model = load_model("runs/quickstart/model.keras")
    assert type(model).__name__ == "BYOL"
    ```
    """
    import_serializable()
    return keras.saving.load_model(path, **kwargs)
