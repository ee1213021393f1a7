"""byol-keras: BYOL self-supervised pretraining for Keras 3 (TensorFlow backend).

```python
# doctest: slow
from byol_keras import BYOL, build_backbone, load_source, make_augmenter, pair_dataset

source = load_source("digits", image_size=16)
pairs = pair_dataset(source, make_augmenter("digits", image_size=16), batch_size=32)
model = BYOL(build_backbone("tiny", image_size=16, width=4))
model.compile(optimizer="adam")
model.fit(pairs, epochs=1, steps_per_epoch=2)  # source.num_examples // 32 for a whole epoch
```
"""

import importlib

from byol_keras import onednn

# onednn does not load TensorFlow; the variable only counts before TensorFlow is loaded.
onednn.turn_on_unless_set()

# Every public name loads its module on first use, so that `import byol_keras`
# imports neither TensorFlow nor Keras. The command line relies on this: it
# must quiet TensorFlow's start-up logging before TensorFlow is first imported,
# and `byol-keras` and `python -m byol_keras` run this file before cli.main.
# `from byol_keras import BYOL` (or any name) imports what that name needs.
_LAZY = {
    "BYOL": "byol_keras.methods.byol",
    "BYOLAugmenter": "byol_keras.augment.augmenter",
    "BatchNormalization": "byol_keras.nn.batchnorm",
    "Config": "byol_keras.config",
    "ImageSource": "byol_keras.data",
    "SelfSupervisedModel": "byol_keras.methods.base",
    "SimCLR": "byol_keras.methods.simclr",
    "SimSiam": "byol_keras.methods.simsiam",
    "LARS": "byol_keras.training.lars",
    "UsageError": "byol_keras.errors",
    "ViewParams": "byol_keras.catalog",
    "WarmupCosine": "byol_keras.training.schedules",
    "build_backbone": "byol_keras.nn.backbones",
    "collapse_indicator": "byol_keras.nn.losses",
    "cosine_tau": "byol_keras.methods.byol",
    "evaluate_run": "byol_keras.evaluation.evaluate",
    "export_run": "byol_keras.export.run",
    "feature_pyramid": "byol_keras.transfer.pyramid",
    "image_batches": "byol_keras.augment.pipelines",
    "load_config": "byol_keras.config",
    "load_model": "byol_keras.registration",
    "load_source": "byol_keras.data",
    "make_augmenter": "byol_keras.augment.pipelines",
    "mlp_head": "byol_keras.nn.heads",
    "normalized_mse": "byol_keras.nn.losses",
    "nt_xent_loss": "byol_keras.nn.losses",
    "pair_dataset": "byol_keras.augment.pipelines",
    "resnet": "byol_keras.nn.backbones",
    "set_fused": "byol_keras.nn.batchnorm",
    "symmetric_byol_loss": "byol_keras.nn.losses",
    "tiny_cnn": "byol_keras.nn.backbones",
    "train": "byol_keras.pretrain",
    "view_params": "byol_keras.augment.views",
    "visualize_run": "byol_keras.evaluation.pictures",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'byol_keras' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = sorted(_LAZY)
__version__ = "0.1.0"
