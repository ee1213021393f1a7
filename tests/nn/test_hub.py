"""KerasHub presets in: `model.backbone: keras_hub:<folder>` starts BYOL from a local preset."""

import json
import sys

import keras
import numpy as np
import pytest

from byol_keras import cli
from byol_keras.builders import backbone_from_config, build_model
from byol_keras.config import from_dict
from byol_keras.errors import UsageError
from byol_keras.registration import load_model

IMAGE_SIZE = 16
# Not ImageNet's: the backbone must take the preset's own standardisation.
MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
TINY = [
    f"data.image_size={IMAGE_SIZE}",
    "model.projection_dim=8",
    "model.projector_hidden_dim=16",
    "model.predictor_hidden_dim=16",
    "train.epochs=1",
    "train.steps_per_epoch=2",
    "train.batch_size=8",
    "train.verbose=0",
    "eval.final_linear_probe=false",
]


def config_for(backbone: str):
    return from_dict({"data": {"image_size": IMAGE_SIZE}, "model": {"backbone": backbone}})


@pytest.mark.parametrize("handle", ["resnet_50_imagenet", "kaggle://keras/resnetv2/keras/x"])
def test_a_hub_handle_is_refused_in_one_line_naming_offline(handle):
    with pytest.raises(UsageError, match="only local paths work offline") as error:
        backbone_from_config(config_for(f"keras_hub:{handle}"))
    assert str(error.value).startswith(f"model.backbone: keras_hub:{handle}: ")
    assert len(str(error.value).splitlines()) == 1


def test_a_folder_without_a_preset_is_refused(tmp_path):
    with pytest.raises(UsageError, match="no config.json, so it is no KerasHub preset"):
        backbone_from_config(config_for(f"keras_hub:{tmp_path}"))


@pytest.fixture(scope="module")
def preset(tmp_path_factory):
    """A small KerasHub ResNet preset with random BatchNorm statistics and its own converter."""
    keras_hub = pytest.importorskip("keras_hub", reason="keras_hub is not installed (hub extra)")
    keras.utils.set_random_seed(0)
    hub = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64],
        input_conv_kernel_sizes=[3],
        stackwise_num_filters=[64, 32],
        stackwise_num_blocks=[1, 1],
        stackwise_num_strides=[1, 2],
        block_type="basic_block",
    )
    rng = np.random.default_rng(0)
    for layer in hub.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            shape = layer.moving_mean.shape
            layer.moving_mean.assign(rng.normal(0, 0.2, shape))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, shape))
    folder = tmp_path_factory.mktemp("preset") / "resnet"
    hub.save_to_preset(str(folder))
    converter = keras_hub.layers.ResNetImageConverter(
        image_size=(IMAGE_SIZE, IMAGE_SIZE),
        scale=[1 / (255 * s) for s in STD],
        offset=[-m / s for m, s in zip(MEAN, STD, strict=True)],
    )
    converter.save_to_preset(str(folder))
    return folder


def preset_features(folder, images: np.ndarray) -> np.ndarray:
    """A KerasHub user's features: the preset's converter on 0..255 pixels, backbone, pooling."""
    import keras_hub

    backbone = keras_hub.models.Backbone.from_preset(str(folder))
    converter = keras_hub.layers.ImageConverter.from_preset(str(folder))
    return np.asarray(keras.ops.mean(backbone(converter(images * 255.0)), axis=(1, 2)))


def test_byol_starts_from_the_preset_weights_and_standardisation(preset):
    model = build_model(config_for(f"keras_hub:{preset}"), total_steps=1)
    images = np.random.default_rng(1).random((4, IMAGE_SIZE, IMAGE_SIZE, 3)).astype("float32")
    expected = preset_features(preset, images)
    online = model.online_backbone(images, training=False).numpy()
    np.testing.assert_allclose(online, expected, rtol=1e-5, atol=1e-5)
    target = model.target_backbone(images, training=False).numpy()
    np.testing.assert_allclose(target, online, rtol=1e-6, atol=1e-6)


def test_preset_without_a_converter_is_standardised_with_imagenet_statistics(preset, tmp_path):
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(preset, bare)
    (bare / "image_converter.json").unlink()
    backbone = backbone_from_config(config_for(f"keras_hub:{bare}"))
    standardize = backbone.get_layer("standardize")
    np.testing.assert_allclose(np.ravel(standardize.mean), [0.485, 0.456, 0.406], rtol=1e-6)
    np.testing.assert_allclose(np.ravel(standardize.variance), np.square([0.229, 0.224, 0.225]))


@pytest.mark.slow
def test_train_from_a_preset_then_export_it_as_a_preset(preset, tmp_path, capsys):
    """The whole loop: train starts from the preset; export saves the trained one with
    KerasHub's save_to_preset, checked in a process without byol_keras."""
    run = tmp_path / "run"
    argv = ["train", "--output", str(run), "--set", *TINY, f"model.backbone=keras_hub:{preset}"]
    assert cli.main(argv) == 0
    trained = load_model(run / "backbone.keras", compile=False)
    images = np.random.default_rng(2).random((4, IMAGE_SIZE, IMAGE_SIZE, 3)).astype("float32")
    assert not np.allclose(trained(images, training=False), preset_features(preset, images))

    assert cli.main(["export", "--run", str(run), "--format", "keras-hub"]) == 0
    manifest = json.loads((run / "export" / "manifest.json").read_text())
    assert manifest["verification"]["passed"] is True
    assert manifest["verification"]["process"]["imported_byol_keras"] is False
    assert "save_to_preset" in manifest["keras_hub"]["source"]
    exported = manifest["version_dir"]
    np.testing.assert_allclose(
        preset_features(exported, images), trained(images, training=False), rtol=1e-4, atol=1e-4
    )


def test_a_missing_hub_extra_is_named_in_one_line(preset, monkeypatch):
    monkeypatch.setitem(sys.modules, "keras_hub", None)  # import keras_hub now fails
    with pytest.raises(UsageError, match=r"pip install 'byol-keras\[hub\]'") as error:
        backbone_from_config(config_for(f"keras_hub:{preset}"))
    assert len(str(error.value).splitlines()) == 1
