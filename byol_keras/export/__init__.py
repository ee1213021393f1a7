"""The export code: a run's networks as verified TF Serving SavedModels and ONNX models.

- `run.py`: `export_run`, the backbone export, and the dispatch to the models the
  downstream tasks keep (`tasks.py`), each exported by its task's folder
  (`transfer/segmentation/export.py`, `transfer/detection/export.py`).
- `publish.py`: `publish`, stage → verify → commit → manifest, shared by every export.
- `signature.py`: the serving function (uint8 images in, embeddings out).
- `parity.py`: the inputs and Keras references the artifacts are checked against.
- `verify.py`: the verification worker, run as `python -m byol_keras.export.verify`.
- `hub.py`: the backbone as a KerasHub preset (`--format keras-hub`), checked by
  `hub_verify.py`, a worker that imports keras_hub but never byol_keras.

Export never imports `byol_keras.evaluation`; it reads runs through `byol_keras.runs`.

The repository's top-level `export/` folder is the deployment side (TF Serving's
`models.config`, the serving and ONNX clients); this package writes what it serves.

```python
# doctest: slow
from byol_keras.export import export_run

manifest = export_run("runs/quickstart", formats=("saved_model", "onnx"))
```
"""

import importlib

# Loaded on first use: the verification worker runs `python -m byol_keras.export.verify`,
# which imports this file, and must load TensorFlow but never Keras or the models.
_LAZY = {"export_run": "byol_keras.export.run", "existing_versions": "byol_keras.export.publish"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'byol_keras.export' has no attribute {name!r}")


__all__ = sorted(_LAZY)
