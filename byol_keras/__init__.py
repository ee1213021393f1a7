"""byol-keras: BYOL self-supervised pretraining for Keras 3 (TensorFlow backend).

```python
from byol_keras import BYOL, build_backbone, load_source, make_augmenter, pair_dataset

source = load_source("digits", image_size=16)
pairs = pair_dataset(source, make_augmenter("digits", image_size=16), batch_size=128)
model = BYOL(build_backbone("tiny", image_size=16))
model.compile(optimizer="adam")
model.fit(pairs, epochs=10, steps_per_epoch=source.num_examples // 128)
```
"""

import importlib

from byol_keras.augment import BYOLAugmenter, image_batches, make_augmenter, pair_dataset
from byol_keras.backbones import build_backbone, resnet, tiny_cnn
from byol_keras.config import Config, load_config
from byol_keras.data import ImageSource, load_source
from byol_keras.errors import UsageError
from byol_keras.heads import mlp_head
from byol_keras.losses import collapse_indicator, normalized_mse, symmetric_byol_loss
from byol_keras.model import BYOL
from byol_keras.schedules import WarmupCosine, cosine_tau
from byol_keras.view_params import ViewParams, view_params

# Heavier entry points (training loop, evaluation with scikit-learn and
# matplotlib, export with tf2onnx) load on first use.
_LAZY = {
    "train": "byol_keras.byol_experiment",
    "LARS": "byol_keras.lars",
    "evaluate_run": "byol_keras.evaluation",
    "visualize_run": "byol_keras.visualize",
    "export_run": "byol_keras.export",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'byol_keras' has no attribute {name!r}")


__all__ = [
    "BYOL",
    "BYOLAugmenter",
    "Config",
    "ImageSource",
    "UsageError",
    "ViewParams",
    "WarmupCosine",
    "build_backbone",
    "collapse_indicator",
    "cosine_tau",
    "image_batches",
    "load_config",
    "load_source",
    "make_augmenter",
    "mlp_head",
    "normalized_mse",
    "pair_dataset",
    "resnet",
    "symmetric_byol_loss",
    "tiny_cnn",
    "view_params",
    *_LAZY,
]
__version__ = "0.1.0"
