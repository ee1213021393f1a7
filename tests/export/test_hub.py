"""KerasHub presets out: native ResNets mapped exactly, checked without byol_keras; refusals."""

import json
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from byol_keras import cli
from byol_keras.config import from_dict, save_config
from byol_keras.export import export_run
from byol_keras.export.hub import parity_size, resnet_as_keras_hub
from byol_keras.methods.byol import BYOL
from byol_keras.nn.backbones import build_backbone
from byol_keras.registration import load_model
from tests.helpers.export import make_finished_run, save_as_run

keras_hub = pytest.importorskip("keras_hub", reason="keras_hub is not installed (the hub extra)")

TOLERANCE = 1e-4  # the ONNX check's rule: max|diff| <= 1e-4 * (1 + max|reference|)
HEADS = {"projection_dim": 8, "projector_hidden_dim": 16, "predictor_hidden_dim": 16}


def run_config(image_size: int, **model) -> dict:
    return {
        "data": {"source": "digits", "image_size": image_size},
        "model": {**HEADS, **model},
        "train": {"epochs": 1, "batch_size": 4},
    }


def calibrated_resnet(name: str, image_size: int) -> keras.Model:
    """A native ResNet whose BatchNorm statistics are those of real-looking inputs, some tiny.

    Moving variances near 1e-4 make Keras's epsilon (1e-3) and KerasHub's
    (1e-5) give very different outputs unless the export folds the difference.
    """
    keras.utils.set_random_seed(0)
    backbone = build_backbone(name, image_size, stem="imagenet", width=64)
    rng = np.random.default_rng(0)
    images = rng.random((8, image_size, image_size, 3)).astype("float32")
    norms = [
        layer for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization)
    ]
    for layer in norms:
        layer.momentum = 0.0  # the moving statistics become the batch's
    backbone(images, training=True)
    for layer in norms:
        layer.momentum = 0.99
        channels = layer.gamma.shape[0]
        gamma, variance = rng.uniform(0.5, 1.5, channels), layer.moving_variance.numpy()
        tiny = rng.random(channels) < 0.25
        # The scale shrinks as the variance does, so that the activations keep their size.
        gamma[tiny] *= np.sqrt((1e-4 + layer.epsilon) / (variance[tiny] + layer.epsilon))
        variance[tiny] = 1e-4
        layer.gamma.assign(gamma)
        layer.beta.assign(rng.normal(0.0, 0.1, channels))
        layer.moving_variance.assign(variance)
    return backbone


def resnet_run(root, name: str = "resnet18", image_size: int = 32):
    model = BYOL(calibrated_resnet(name, image_size), **HEADS)
    run = save_as_run(model, root, image_size)
    config = run_config(image_size, backbone=name, stem="imagenet", width=64)
    save_config(from_dict(config), run.config_path)
    return run


def hub_features(preset, images_255: np.ndarray) -> np.ndarray:
    """What a KerasHub user computes: the preset's converter, backbone, and average pooling."""
    backbone = keras_hub.models.Backbone.from_preset(str(preset))
    converter = keras_hub.layers.ImageConverter.from_preset(
        str(preset), image_size=images_255.shape[1:3]
    )
    return np.asarray(keras.ops.mean(backbone(converter(images_255)), axis=(1, 2)))


def assert_close(actual, reference):
    assert actual.shape == reference.shape
    assert np.abs(actual - reference).max() <= TOLERANCE * (1 + np.abs(reference).max())


def test_native_resnet18_maps_onto_keras_hub_exactly_where_padding_agrees():
    size = parity_size(32)
    ours = calibrated_resnet("resnet18", size)
    hub = resnet_as_keras_hub(ours, "basic", (2, 2, 2, 2))
    assert hub.block_type == "basic_block" and hub.use_pre_activation is False
    assert sorted(hub.pyramid_outputs) == ["P2", "P3", "P4", "P5"]  # what RetinaNet takes
    images = np.random.default_rng(1).random((4, size, size, 3)).astype("float32")
    expected = ours(images, training=False).numpy()
    assert_close(standardized_hub(hub, images), expected)
    # At an even size the frameworks pad strided layers differently: another function.
    at_32 = build_backbone("resnet18", 32, stem="imagenet", width=64)
    at_32.set_weights(ours.get_weights())
    expected = at_32(images[:, :32, :32], training=False).numpy()
    difference = np.abs(standardized_hub(hub, images[:, :32, :32]) - expected).max()
    assert difference > TOLERANCE * (1 + np.abs(expected).max())


def standardized_hub(hub, images: np.ndarray) -> np.ndarray:
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    standardized = ((images - mean) / std).astype("float32")
    return np.mean(hub(standardized, training=False), axis=(1, 2))


@pytest.fixture(scope="module")
def resnet18_run(tmp_path_factory):
    return resnet_run(tmp_path_factory.mktemp("hub") / "run")


@pytest.mark.slow
def test_export_keras_hub_round_trips_a_resnet18_with_parity(resnet18_run, capsys):
    run = resnet18_run
    assert cli.main(["export", "--run", str(run.root), "--format", "keras-hub"]) == 0
    preset = run.root / "export" / "byol_backbone_keras_hub" / "1"
    assert capsys.readouterr().out.strip().endswith(f"exported to {preset}")
    manifest = json.loads((run.root / "export" / "manifest.json").read_text())
    assert sorted(manifest["artifacts"]["keras_hub"]["sha256"]) == [
        "config.json",
        "image_converter.json",
        "metadata.json",
        "model.weights.h5",
    ]
    verification = manifest["verification"]
    assert verification["passed"] is True and verification["checked_at_size"] == 33
    assert verification["process"]["imported_byol_keras"] is False
    assert verification["input_sets"]["real"]["description"].startswith("digits split train")
    assert manifest["keras_hub"]["backbone_class"] == "ResNetBackbone"
    # Independently of the export's own check: the preset here against backbone.keras at 33 px.
    backbone = load_model(run.backbone_path, compile=False)
    at_33 = build_backbone("resnet18", 33, stem="imagenet", width=64)
    at_33.set_weights(backbone.get_weights())
    images = np.random.default_rng(2).random((4, 33, 33, 3)).astype("float32")
    assert_close(hub_features(preset, images * 255), at_33(images, training=False).numpy())


def test_presets_and_saved_models_never_share_a_name(tiny_run, capsys):
    output = tiny_run.root / "mixed"
    (output / "byol_backbone" / "1").mkdir(parents=True)
    (output / "byol_backbone" / "1" / "saved_model.pb").write_bytes(b"")
    argv = ["export", "--run", str(tiny_run.root), "--output", str(output)]
    assert cli.main([*argv, "--format", "keras-hub", "--name", "byol_backbone"]) == 2
    assert "holds SavedModel versions" in capsys.readouterr().err
    (output / "presets" / "3").mkdir(parents=True)
    (output / "presets" / "3" / "metadata.json").write_text("{}")
    assert cli.main([*argv, "--format", "saved_model", "--name", "presets"]) == 2
    assert "holds preset versions" in capsys.readouterr().err


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return make_finished_run(tmp_path_factory.mktemp("hub_refusals") / "run")


@pytest.mark.parametrize(
    ("model", "named"),
    [
        ({"backbone": "resnet18", "stem": "cifar", "width": 64}, "model.stem=cifar"),
        ({"backbone": "resnet18", "stem": "auto", "width": 64}, "model.stem=auto"),
        ({"backbone": "resnet18", "stem": "imagenet", "width": 32}, "model.width=32"),
        ({"backbone": "tiny", "width": 4}, "model.backbone=tiny"),
    ],
)
def test_runs_keras_hub_cannot_express_are_refused_in_one_line(tiny_run, capsys, model, named):
    save_config(from_dict(run_config(16, **model)), tiny_run.config_path)
    argv = ["export", "--run", str(tiny_run.root), "--format", "keras-hub"]
    assert cli.main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("byol-keras: error: --format keras-hub:") and named in error
    assert len(error.splitlines()) == 1
    assert not (tiny_run.root / "export" / "byol_backbone_keras_hub" / "1").exists()


def test_keras_hub_goes_alone_and_exports_only_the_backbone(tiny_run):
    from byol_keras.errors import UsageError

    with pytest.raises(UsageError, match="keras-hub is exported alone"):
        export_run(tiny_run.root, formats=("keras_hub", "onnx"))
    with pytest.raises(UsageError, match="exports the backbone only"):
        export_run(tiny_run.root, formats=("keras_hub",), model="segmenter")


@pytest.mark.slow
def test_export_keras_hub_round_trips_a_resnet50_with_parity(tmp_path):
    run = resnet_run(tmp_path / "run", "resnet50", image_size=32)
    manifest = export_run(run.root, formats=("keras_hub",))
    assert manifest["verification"]["passed"] is True
    assert manifest["keras_hub"]["backbone_class"] == "ResNetBackbone"
    preset = manifest["version_dir"]
    assert keras_hub.models.Backbone.from_preset(preset).block_type == "bottleneck_block"
    at_33 = build_backbone("resnet50", 33, stem="imagenet", width=64)
    at_33.set_weights(load_model(run.backbone_path, compile=False).get_weights())
    images = np.random.default_rng(3).random((2, 33, 33, 3)).astype("float32")
    assert_close(hub_features(preset, images * 255), at_33(images, training=False).numpy())


@pytest.fixture(scope="module")
def resnet18_preset(resnet18_run, tmp_path_factory):
    """The resnet18 run exported as a KerasHub preset, for KerasHub's own task models."""
    output = tmp_path_factory.mktemp("presets")
    return export_run(resnet18_run.root, formats=("keras_hub",), output=output)["version_dir"]


def test_keras_hub_image_classifier_fine_tunes_on_the_exported_preset(resnet18_preset, mnist_npz):
    keras.utils.set_random_seed(0)
    with np.load(mnist_npz) as mnist:
        digits, labels = mnist["x_train"][:256], mnist["y_train"][:256]
    images = np.repeat(digits[..., None], 3, axis=-1).astype("float32")  # 0..255 RGB, 28x28
    classifier = keras_hub.models.ImageClassifier.from_preset(resnet18_preset, num_classes=10)
    classifier.compile(optimizer=keras.optimizers.Adam(1e-3))
    before = classifier.evaluate(images, labels, batch_size=64, verbose=0, return_dict=True)
    classifier.fit(images, labels, batch_size=32, epochs=2, shuffle=False, verbose=0)
    after = classifier.evaluate(images, labels, batch_size=64, verbose=0, return_dict=True)
    assert after["loss"] < 0.8 * before["loss"]


@pytest.mark.slow
def test_keras_hub_retinanet_trains_a_step_on_the_exported_preset(resnet18_preset):
    keras.utils.set_random_seed(0)
    encoder = keras_hub.models.Backbone.from_preset(resnet18_preset)
    backbone = keras_hub.models.RetinaNetBackbone(
        image_encoder=encoder, min_level=3, max_level=7, use_p5=False
    )
    detector = keras_hub.models.RetinaNetObjectDetector(
        backbone=backbone, num_classes=3, bounding_box_format="yxyx"
    )
    detector.compile(optimizer=keras.optimizers.SGD(0.01))
    images = np.random.default_rng(0).uniform(0, 255, (2, 128, 128, 3)).astype("float32")
    boxes = np.array([[[10, 10, 60, 70], [64, 32, 120, 100]]] * 2, "float32")
    labels = np.array([[0, 2], [1, 2]], "int32")
    encoder_weights = [w.numpy() for w in encoder.trainable_weights]
    batch = tf.data.Dataset.from_tensors((images, {"boxes": boxes, "labels": labels}))
    history = detector.fit(batch, epochs=1, shuffle=False, verbose=0).history
    assert np.isfinite(history["loss"][0])
    moved = [
        not np.array_equal(w.numpy(), before)
        for w, before in zip(encoder.trainable_weights, encoder_weights, strict=True)
    ]
    assert all(moved)  # the step reached the BYOL weights, not just the heads


def test_export_without_the_hub_extra_names_it_in_one_line(tiny_run, capsys, monkeypatch):
    model = {"backbone": "resnet18", "stem": "imagenet", "width": 64}
    save_config(from_dict(run_config(16, **model)), tiny_run.config_path)
    monkeypatch.setitem(sys.modules, "keras_hub", None)  # import keras_hub now fails
    assert cli.main(["export", "--run", str(tiny_run.root), "--format", "keras-hub"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.endswith("pip install 'byol-keras[hub]' (Python 3.11+)")
    assert len(error.splitlines()) == 1
