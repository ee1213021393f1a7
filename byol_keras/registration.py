"""Registers byol-keras's Keras classes once Keras is imported, so that saved runs load.

`keras.models.load_model("run/model.keras")` finds `byol_keras>BYOL` (and
the LARS optimizer, the learning-rate schedule, the augmenter) only if the
modules that register them were imported; Keras imports modules by itself
only for its own packages. `import byol_keras` must not import TensorFlow,
for the command line's quiet start, so it calls `register_with_keras()`:
when Keras is already imported the modules are imported at once, and
otherwise once Keras's import has finished. They wait for every import
under way to finish: TensorFlow's, which imports Keras halfway through its
own, and ours, because a module of ours that imports Keras at its top
(`byol_keras.losses`, say) has not yet defined what the others import from it.

```python
import byol_keras  # no TensorFlow yet
import keras  # now BYOL, SimSiam, SimCLR, LARS, ... are registered
model = keras.models.load_model("runs/quickstart/model.keras")
```
"""

import importlib
import importlib.abc
import importlib.util
import sys

from byol_keras.methods import METHODS

# The modules whose import registers what a run's model.keras refers to.
SERIALIZABLE_MODULES = (
    *(method.module for method in METHODS.values()),
    "byol_keras.training.lars",
    "byol_keras.training.schedules",
    "byol_keras.augment.augmenter",
    "byol_keras.batchnorm",  # the backbones' and heads' BatchNorm layers
    "byol_keras.transfer.segmenter",  # the segmenters that --protocol segment keeps
    "byol_keras.transfer.detector",  # and the detectors of --protocol detect
)
_WATCHED = ("keras", "tensorflow")


def register_with_keras() -> None:
    """Imports `SERIALIZABLE_MODULES` now if Keras is loaded, else right after it loads."""
    if "keras" in sys.modules:
        _import_serializable()
    elif not any(isinstance(finder, _AfterKerasImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _AfterKerasImport())


def _import_serializable() -> None:
    for module in SERIALIZABLE_MODULES:
        importlib.import_module(module)


class _AfterKerasImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself: wraps the loading of Keras, TensorFlow and ours to register after."""

    def __init__(self):
        self._finding = False
        self._loading: set[str] = set()

    def find_spec(self, name, path=None, target=None):
        if self._finding or not (name in _WATCHED or name.startswith("byol_keras.")):
            return None
        self._finding = True  # the other finders find the spec; this one only wraps it
        try:
            spec = importlib.util.find_spec(name)
        finally:
            self._finding = False
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_register(module) -> None:
            self._loading.add(name)
            try:
                exec_module(module)
            finally:
                self._loading.discard(name)
            self._register_when_ready()

        spec.loader.exec_module = exec_then_register
        return spec

    def _register_when_ready(self) -> None:
        # Inside TensorFlow's import, or one of ours, Keras is done but the other is not.
        if "keras" not in sys.modules or self._loading:
            return
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        _import_serializable()
