"""KerasHub presets as BYOL backbones: `model.backbone: keras_hub:<local preset folder>`.

A preset is a folder with `config.json`, `model.weights.h5` and `metadata.json`
(KerasHub's `Backbone.save_to_preset` writes one, and so does `byol-keras
export --format keras-hub`). Its backbone returns feature maps; BYOL takes
pooled features, so the backbone is wrapped between the preset's input
standardisation and a global average pooling, and keeps the preset's weights
as its starting point, as `model.init_weights` would. Nothing is downloaded:
only local folders are read.

keras-hub is the optional extra `byol-keras[hub]` (Python 3.11+).

```python
# doctest: skip needs a preset: the example runs have no ResNet of width 64
backbone = preset_backbone("export/byol_backbone_keras_hub/1", image_size=224)
assert backbone.output.shape == (None, 512)  # a ResNet-18 preset
```
"""

import json
import logging
import os
from pathlib import Path

import keras

from byol_keras.errors import UsageError, first_line
from byol_keras.nn.backbones import IMAGENET_MEAN, IMAGENET_STD

log = logging.getLogger(__name__)

PRESET_PREFIX = "keras_hub:"
_IMAGE_CONVERTER_FILE = "image_converter.json"


def import_keras_hub(option: str):
    """Imports keras_hub, or raises `UsageError` naming `option` and the extra that installs it."""
    try:
        import keras_hub
    except ImportError:
        raise UsageError(
            f"{option}: needs keras-hub, which is not installed: "
            "pip install 'byol-keras[hub]' (Python 3.11+)"
        ) from None
    return keras_hub


def preset_backbone(preset: str, image_size: int) -> keras.Model:
    """The BYOL backbone of a local KerasHub preset: its standardisation, backbone, and pooling.

    Raises `UsageError` for a handle that is not a local folder (such as
    `resnet_50_imagenet`), a folder that is not a preset, or a backbone that
    does not return feature maps.
    """
    option = f"model.backbone: {PRESET_PREFIX}{preset}"
    path = Path(os.path.expanduser(preset))
    if not path.is_dir():
        raise UsageError(
            f"{option}: not a local preset folder; only local paths work offline "
            "(byol-keras never downloads): save the preset to a folder and name that"
        )
    if not (path / "config.json").is_file():
        raise UsageError(f"{option}: '{path}' holds no config.json, so it is no KerasHub preset")
    keras_hub = import_keras_hub(option)
    try:
        hub = keras_hub.models.Backbone.from_preset(str(path))
    except Exception as error:  # any failure to read the folder is the user's preset
        raise UsageError(f"{option}: cannot load the preset: {first_line(error)}") from None
    mean, std = preset_standardization(path)
    inputs = keras.Input((image_size, image_size, 3), name="images")
    x = keras.layers.Normalization(mean=mean, variance=[s * s for s in std], name="standardize")(
        inputs
    )
    maps = hub(x)
    if len(maps.shape) != 4:
        raise UsageError(f"{option}: the backbone returns {maps.shape}, not feature maps")
    outputs = keras.layers.GlobalAveragePooling2D(name="pool")(maps)
    log.info("model.backbone: %s from %s, with its weights", type(hub).__name__, path)
    return keras.Model(inputs, outputs, name="keras_hub_backbone")


def preset_standardization(path: Path) -> tuple[list[float], list[float]]:
    """Per-channel (mean, std) on [0, 1] pixels that the preset's image converter applies.

    KerasHub's converter computes `pixels * scale + offset` on 0..255 pixels;
    that is `(pixels / 255 - mean) / std`. A preset without a converter gets
    the ImageNet statistics, which KerasHub's ResNet presets use.
    """
    file = path / _IMAGE_CONVERTER_FILE
    if not file.is_file():
        log.info("%s has no %s: standardising with ImageNet's statistics", path, file.name)
        return list(IMAGENET_MEAN), list(IMAGENET_STD)
    config = json.loads(file.read_text())["config"]
    scale = _per_channel(config.get("scale"), 1.0)
    offset = _per_channel(config.get("offset"), 0.0)
    std = [1.0 / (255.0 * s) for s in scale]
    return [-o * s for o, s in zip(offset, std, strict=True)], std


def converter_config(mean, std, image_size: int) -> dict:
    """The image converter arguments that standardise 0..255 pixels as (x / 255 - mean) / std."""
    return {
        "image_size": (image_size, image_size),
        "scale": [1.0 / (255.0 * s) for s in std],
        "offset": [-m / s for m, s in zip(mean, std, strict=True)],
    }


def _per_channel(value, default: float) -> list[float]:
    if value is None:
        return [default] * 3
    if isinstance(value, int | float):
        return [float(value)] * 3
    return [float(v) for v in value]
