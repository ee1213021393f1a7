"""The networks a `Config` describes: the adapters between the config and the model classes.

The backbones and the method classes take plain arguments and never read
the config, so that they stay usable (and testable) without it; these
functions are the only place that maps `model.*` keys onto them, next to
the config and upstream of training and evaluation, which both use them.
`build_model` is the whole of it: the backbone, its starting weights, and the method.

```python
config = load_config("configs/quickstart.yaml")
model = model_from_config(config, backbone_from_config(config), total_steps=1000)
model = build_model(config, total_steps=1000)  # with model.init_weights, if set
```
"""

import keras

from byol_keras.catalog import get_method, method_class
from byol_keras.config import Config
from byol_keras.errors import UsageError
from byol_keras.methods.base import SelfSupervisedModel
from byol_keras.nn.backbones import build_backbone, synchronize_batchnorm
from byol_keras.nn.hub import PRESET_PREFIX, preset_backbone
from byol_keras.nn.init_weights import IMAGENET, load_init_weights


def backbone_from_config(config: Config, weights: str | None = None) -> keras.Model:
    """The backbone that `config.model` names, at `config.data.image_size`.

    Args:
        config: a `Config`; `model.backbone`, `model.stem` and `model.width` choose
            the network, `data.image_size` its input size. `keras_hub:<folder>`
            names a local KerasHub preset, whose weights it keeps (`nn/hub.py`).
        weights: `None` (random), or `"imagenet"` for a `keras.applications` model.

    Returns:
        A new `keras.Model` from `build_backbone`, untrained unless `weights` is given.

    ```python
    backbone = backbone_from_config(load_config("configs/quickstart.yaml"))
    ```
    """
    name = config.model.backbone
    if name.startswith(PRESET_PREFIX):
        if weights is not None:
            raise UsageError(f"model.init_weights: {weights} does not apply to {name}")
        return preset_backbone(name.removeprefix(PRESET_PREFIX), config.data.image_size)
    return build_backbone(
        name,
        image_size=config.data.image_size,
        stem=config.model.stem,
        width=config.model.width,
        weights=weights,
    )


def model_from_config(
    config: Config,
    backbone: keras.Model,
    total_steps: int,
    augmenter: keras.layers.Layer | None = None,
) -> keras.Model:
    """The `model.method` class around `backbone`, with the `model.*` keys that method takes.

    Every method takes the head sizes and `model.predictor`; the registry
    (`byol_keras.catalog.METHODS`) names the keys only some take (`tau_base` and
    `tau_schedule` for BYOL, `temperature` for SimCLR).

    ```python
    config = load_config("configs/quickstart.yaml", ["model.method=simsiam"])
    backbone = backbone_from_config(config)
    model = model_from_config(config, backbone, total_steps=1000)  # BYOL, SimSiam or SimCLR
    assert type(model).__name__ == "SimSiam"
    ```
    """
    model = config.model
    options = {key: getattr(model, key) for key in get_method(model.method).options}
    return method_class(model.method)(
        backbone,
        projection_dim=model.projection_dim,
        projector_hidden_dim=model.projector_hidden_dim,
        predictor_hidden_dim=model.predictor_hidden_dim,
        total_steps=total_steps,
        augmenter=augmenter,
        use_predictor=model.predictor,
        **options,
    )


def build_model(
    config: Config,
    total_steps: int,
    augmenter: keras.layers.Layer | None = None,
    init_weights: bool = True,
) -> SelfSupervisedModel:
    """The model the config describes (the `model.method` class), τ scheduled over `total_steps`.

    Build it inside `strategy.scope()`: with more than one replica BYOL synchronises
    the heads' BatchNorm, and the backbone's is synchronised too when
    `model.sync_batchnorm_backbone` is set. With `init_weights`, the backbone
    starts from `model.init_weights` (when set), and BYOL's target copies it.
    """
    start_from = config.model.init_weights if init_weights else None
    backbone = backbone_from_config(config, weights=IMAGENET if start_from == IMAGENET else None)
    if start_from not in (None, IMAGENET):
        load_init_weights(backbone, start_from)
    if config.model.sync_batchnorm_backbone:
        backbone = synchronize_batchnorm(backbone)
    return model_from_config(config, backbone, total_steps, augmenter)
