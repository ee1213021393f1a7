"""Exports a run's backbone as a KerasHub preset, verified by a process that never imports us.

`byol-keras export --run DIR --format keras-hub` writes, through `publish`,
a preset folder `<output>/<name>/<version>/` (`config.json`,
`model.weights.h5`, `metadata.json`, and `image_converter.json`, the
ImageNet standardisation that the native backbones apply inside):

- a native `resnet18`/`resnet34`/`resnet50` with the ImageNet stem and width 64
  becomes a `keras_hub.models.ResNetBackbone` of the same blocks and strides,
  its weights copied layer by layer. KerasHub's BatchNorm epsilon is 1e-5,
  ours Keras's 1e-3: each scale is multiplied by sqrt(var + 1e-5) /
  sqrt(var + 1e-3), which leaves inference unchanged;
- a KerasHub backbone that BYOL trained (`model.backbone: keras_hub:<folder>`,
  or any backbone that wraps one between a standardisation and a pooling)
  is saved with its own `save_to_preset`.

Other runs are refused with one line naming the option: the CIFAR stem
(KerasHub's stem is always the strided 7x7 with max-pool), a width other
than 64 (KerasHub's first stage has 64 filters), other backbones.

Verification: a fresh process that imports keras_hub but not byol_keras
(`hub_verify.py`) loads `Backbone.from_preset`, applies the preset's image
converter and a global average pooling, and must match `backbone.keras` within
the ONNX check's tolerance on the run's real images and on random ones.
KerasHub pads its strided convolutions and max-pool symmetrically, as PyTorch
does, where the native ResNet's TensorFlow "same" padding puts the extra pixel
at the bottom and right of an even-sized input: the two compute the same
function exactly when every strided layer sees an odd size, which is true
for inputs of 32k + 1 pixels. The native ResNets are therefore checked at
the smallest such size not below the training size (33, 97, 225, ...), and
the difference at the training size itself is measured and recorded.

```python
# doctest: skip the example runs have no ResNet of width 64 with the ImageNet stem
manifest = export_run("runs/imagenet_resnet18", formats=("keras_hub",))
# then, with keras_hub alone:
backbone = keras_hub.models.Backbone.from_preset(manifest["version_dir"])
```
"""

import dataclasses
import logging
import math
import re
from pathlib import Path

import keras
import numpy as np

from byol_keras.augment.eval_transform import EvalTransform
from byol_keras.config import Config
from byol_keras.errors import ExportError, ExportVerificationError, UsageError
from byol_keras.export.parity import verification_inputs
from byol_keras.export.publish import KERAS_HUB, ExportRequest, publish
from byol_keras.export.verify import (
    RELATIVE_TOLERANCE,
    TOLERANCE_RULE,
    compare,
    failures,
    run_in_fresh_process,
)
from byol_keras.nn.backbones import CIFAR_STEM_MAX_SIZE, RESNET_LAYOUTS, all_layers
from byol_keras.nn.hub import PRESET_PREFIX, converter_config, import_keras_hub
from byol_keras.runs import RunDirectory, load_networks

log = logging.getLogger(__name__)

OPTION = "--format keras-hub"
HUB_EPSILON = 1e-5  # every BatchNormalization of KerasHub's ResNetBackbone
WORKER = str(Path(__file__).with_name("hub_verify.py"))
FEATURES = "features"
# Our block parts → KerasHub's: the projection shortcut is its "0", the convolutions 1, 2, 3.
_PARTS = {"proj": 0, "a": 1, "b": 2, "c": 3}
_NATIVE_NAME = re.compile(r"stage(\d)_block(\d+)_(proj|a|b|c)_(conv|bn)")
_PADDING_NOTE = (
    "KerasHub pads strided layers symmetrically; TensorFlow's 'same' padding of the native "
    "ResNet adds the extra pixel at the bottom and right of even sizes, so the two agree "
    "exactly on inputs of 32k + 1 pixels (checked) and differ by this much at the training size"
)


def export_preset(run: RunDirectory, request: ExportRequest, config: Config) -> dict:
    """Writes the run's online backbone as a verified KerasHub preset; returns the manifest.

    Raises `UsageError` naming the option when KerasHub cannot express the
    backbone, or when keras-hub is not installed.
    """
    keras_hub = import_keras_hub(OPTION)
    native = not config.model.backbone.startswith(PRESET_PREFIX)
    if native:
        block, depths = check_expressible(config)
    backbone, _ = load_networks(run)
    transform = EvalTransform.from_config(config)
    standardize = _standardization(backbone)
    if native:
        hub = resnet_as_keras_hub(backbone, block, depths)
    else:
        hub = _trained_hub_backbone(backbone, keras_hub)
    converter_cls = _converter_class(keras_hub, hub)
    converter = converter_cls(**converter_config(*standardize, transform.image_size))

    def write(path: Path) -> None:
        hub.save_to_preset(str(path))
        converter.save_to_preset(str(path))

    def verify(staged: dict, workdir: Path) -> dict:
        return verify_preset(config, staged[KERAS_HUB], backbone, native, workdir)

    source = (
        f"{config.model.backbone} mapped layer by layer, BatchNorm epsilon folded into the scale"
        if native
        else "the KerasHub backbone BYOL trained, saved with its save_to_preset"
    )
    description = {
        "model": "backbone",
        "keras_hub": {
            "backbone_class": type(hub).__name__,
            "converter_class": converter_cls.__name__,
            "source": source,
            "load": "keras_hub.models.Backbone.from_preset(version_dir)",
        },
        "preprocessing": f"the preset's image converter: resize to {transform.image_size}, "
        "then (pixels / 255 - mean) / std per channel",
        "outputs": {FEATURES: "global average pooling of the backbone's last feature map"},
        "image_size": transform.image_size,
        "tolerance": {"rule": TOLERANCE_RULE, "relative": RELATIVE_TOLERANCE},
        "precision": {"trained": config.train.precision, "exported": "float32"},
    }
    return publish(request, run, write, verify, description)


def check_expressible(config: Config) -> tuple[str, tuple]:
    """The native ResNet's (block, depths), or `UsageError` naming what KerasHub cannot express."""
    model = config.model
    if model.backbone not in RESNET_LAYOUTS:
        raise UsageError(
            f"{OPTION}: model.backbone={model.backbone} has no KerasHub equivalent "
            f"({', '.join(RESNET_LAYOUTS)} with model.stem=imagenet and model.width=64, "
            f"or a {PRESET_PREFIX} backbone)"
        )
    stem = model.stem
    if stem == "auto":
        stem = "cifar" if config.data.image_size <= CIFAR_STEM_MAX_SIZE else "imagenet"
    if stem != "imagenet":
        raise UsageError(
            f"{OPTION}: this run has the CIFAR stem (model.stem={model.stem} at "
            f"{config.data.image_size} px), and KerasHub's ResNetBackbone only the 7x7 "
            "stride-2 stem with max-pool: pretrain with model.stem=imagenet"
        )
    if model.width != 64:
        raise UsageError(
            f"{OPTION}: this run has model.width={model.width}, and KerasHub's "
            "ResNetBackbone 64 filters in its first stage: pretrain with model.width=64"
        )
    return RESNET_LAYOUTS[model.backbone]


def resnet_as_keras_hub(backbone: keras.Model, block: str, depths: tuple) -> keras.Model:
    """A `keras_hub.models.ResNetBackbone` with the native ResNet's weights, layer by layer.

    The standardisation and the pooling stay outside (the preset's image
    converter, and the user's pooling). Raises `ExportError` if any layer of
    either network is left without its counterpart.
    """
    keras_hub = import_keras_hub(OPTION)
    hub = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64],
        input_conv_kernel_sizes=[7],
        stackwise_num_filters=[64 * 2**stage for stage in range(len(depths))],
        stackwise_num_blocks=list(depths),
        stackwise_num_strides=[1] + [2] * (len(depths) - 1),
        block_type={"basic": "basic_block", "bottleneck": "bottleneck_block"}[block],
        use_pre_activation=False,
    )
    copied = set()
    for layer in backbone.layers:
        if not layer.weights or isinstance(layer, keras.layers.Normalization):
            continue
        target = hub.get_layer(_keras_hub_name(layer.name))
        weights = layer.get_weights()
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, variance = weights
            fold = np.sqrt(variance + target.epsilon) / np.sqrt(variance + layer.epsilon)
            weights = [gamma * fold, beta, mean, variance]
        target.set_weights(weights)
        copied.add(target.name)
    left = [layer.name for layer in hub.layers if layer.weights and layer.name not in copied]
    if left:
        raise ExportError(f"{OPTION}: no native layer for KerasHub's {', '.join(left[:3])}")
    return hub


def parity_size(image_size: int) -> int:
    """The smallest size of 32k + 1 pixels not below `image_size`: all strided layers see odd sizes.

    ```python
    assert [parity_size(s) for s in (16, 33, 96, 224)] == [33, 33, 97, 225]
    ```
    """
    return 32 * max(1, math.ceil((image_size - 1) / 32)) + 1


def verify_preset(
    config: Config, preset: Path, backbone: keras.Model, native: bool, workdir: Path
) -> dict:
    """Checks the staged preset, loaded without byol_keras, against the Keras backbone.

    Raises `ExportVerificationError` naming every failed check.
    """
    inputs, input_sets = verification_inputs(config)
    transform = EvalTransform.from_config(config)
    size = parity_size(transform.image_size) if native else transform.image_size
    reference_model = _at_input_size(backbone, size)
    sets = [name for name in ("real", "random") if name in inputs]
    pixels = {
        name: _pixels(inputs[name], dataclasses.replace(transform, image_size=size))
        for name in sets
    }
    if native:
        # Not a check: the measured effect of the padding conventions at the training size.
        pixels["real_at_training_size"] = _pixels(inputs[sets[0]], transform)
    references = {
        name: {FEATURES: np.asarray(reference_model(values, training=False), np.float32)}
        for name, values in pixels.items()
        if name in sets
    }
    scaled = {name: values * np.float32(255) for name, values in pixels.items()}
    outputs, report = run_in_fresh_process(scaled, {KERAS_HUB: preset}, workdir, WORKER)
    checks = compare(outputs.get(KERAS_HUB, {}), references)
    problems = failures({KERAS_HUB: checks})
    if report["imported_byol_keras"]:
        problems.append("the verification process imported byol_keras")
    if problems:
        raise ExportVerificationError(f"{len(problems)} check(s) failed: {'; '.join(problems)}")
    verification = {
        "passed": True,
        "tolerance": TOLERANCE_RULE,
        "process": {key: report[key] for key in ("pid", "imported_byol_keras", "versions")},
        "checked_at_size": size,
        "input_sets": {name: input_sets[name] for name in sets},
        KERAS_HUB: checks,
    }
    if native:
        reference = np.asarray(backbone(pixels["real_at_training_size"], training=False))
        actual = outputs[KERAS_HUB]["real_at_training_size"][FEATURES]
        verification["at_training_size"] = {
            "max_abs_diff": float(np.max(np.abs(actual - reference))),
            "max_abs_reference": float(np.max(np.abs(reference))),
            "note": _PADDING_NOTE,
        }
    return verification


def _pixels(images: np.ndarray, transform: EvalTransform) -> np.ndarray:
    return np.asarray(transform(images), np.float32)


def _at_input_size(backbone: keras.Model, size: int) -> keras.Model:
    """The same functional network and weights, for `size` x `size` inputs."""
    if tuple(backbone.inputs[0].shape[1:3]) == (size, size):
        return backbone
    config = backbone.get_config()
    config["layers"][0]["config"]["batch_shape"] = [None, size, size, 3]
    resized = keras.Model.from_config(config)
    resized.set_weights(backbone.get_weights())
    return resized


def _keras_hub_name(name: str) -> str:
    if name in ("stem_conv", "stem_bn"):
        return "conv1_" + name.removeprefix("stem_")
    match = _NATIVE_NAME.fullmatch(name)
    if not match:
        raise ExportError(f"{OPTION}: the native ResNet has an unexpected layer {name!r}")
    stage, index, part, kind = match.groups()
    return f"stack{int(stage) - 1}_block{int(index) - 1}_{_PARTS[part]}_{kind}"


def _standardization(backbone: keras.Model) -> tuple[list[float], list[float]]:
    """The (mean, std) of the backbone's `standardize` layer, or none (0, 1)."""
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.Normalization):
            mean = np.ravel(keras.ops.convert_to_numpy(layer.mean)).tolist()
            variance = np.ravel(keras.ops.convert_to_numpy(layer.variance))
            return mean, np.sqrt(variance).tolist()
    return [0.0] * 3, [1.0] * 3


def _trained_hub_backbone(backbone: keras.Model, keras_hub) -> keras.Model:
    """The one KerasHub backbone inside, between at most a standardisation and a pooling."""
    found = [
        layer for layer in all_layers(backbone) if isinstance(layer, keras_hub.models.Backbone)
    ]
    if len(found) != 1:
        raise UsageError(f"{OPTION}: expected one KerasHub backbone in the run, found {len(found)}")
    known = (
        keras.layers.InputLayer,
        keras.layers.Normalization,
        keras.layers.GlobalAveragePooling2D,
    )
    others = [x.name for x in backbone.layers if x is not found[0] and not isinstance(x, known)]
    if others:
        raise UsageError(
            f"{OPTION}: the backbone has layers outside the KerasHub one: {others[:3]}"
        )
    return found[0]


def _converter_class(keras_hub, hub: keras.Model):
    """KerasHub's image converter made for this backbone class, else the generic one."""
    base = keras_hub.layers.ImageConverter
    classes = [cls for cls in _subclasses(base) if getattr(cls, "backbone_cls", None) is type(hub)]
    return classes[0] if classes else base


def _subclasses(cls) -> list:
    return [sub for child in cls.__subclasses__() for sub in (child, *_subclasses(child))]
