"""BYOL accepts any Keras backbone: each kind trains, saves, reloads and exports with parity."""

import os
import subprocess
import sys
from dataclasses import dataclass

import keras
import numpy as np
import pytest
import tensorflow as tf

from byol_keras.errors import UsageError
from byol_keras.export import export_run
from byol_keras.methods.byol import BYOL
from byol_keras.nn.backbones import build_backbone
from byol_keras.nn.target import SharedCodeCopy
from byol_keras.registration import load_model
from tests.helpers.export import save_as_run

HEADS = {"projection_dim": 8, "projector_hidden_dim": 16, "predictor_hidden_dim": 16}


@keras.saving.register_keras_serializable(package="byol_keras_tests")
class ConvNet(keras.Model):
    """A subclassed backbone; Keras generates its get_config from the int argument."""

    def __init__(self, width: int = 4, **kwargs):
        super().__init__(**kwargs)
        self.conv = keras.layers.Conv2D(width, 3, use_bias=False)
        self.norm = keras.layers.BatchNormalization()
        self.pool = keras.layers.GlobalAveragePooling2D()

    def call(self, images, training: bool = False):
        return self.pool(keras.activations.relu(self.norm(self.conv(images), training=training)))


class ConvNetWithoutConfig(keras.Model):
    """The same network built around a layer object, which Keras cannot put in a config."""

    def __init__(self, conv: keras.layers.Layer):
        super().__init__()
        self.conv = conv
        self.norm = keras.layers.BatchNormalization()
        self.pool = keras.layers.GlobalAveragePooling2D()

    def call(self, images, training: bool = False):
        return self.pool(keras.activations.relu(self.norm(self.conv(images), training=training)))


def issue_sequential():
    """The example of issue 15, as the keras.io examples build their encoders."""
    return keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
        ]
    )


KINDS = {
    "sequential": (16, lambda: (issue_sequential(), {})),
    "subclassed": (16, lambda: (ConvNet(width=4), {"input_shape": (16, 16, 3)})),
    # The smallest keras.applications network that takes 32 px images.
    "applications": (
        32,
        lambda: (
            keras.applications.MobileNet(
                input_shape=(32, 32, 3), alpha=0.25, include_top=False, weights=None, pooling="avg"
            ),
            {},
        ),
    ),
}


def images(size: int, count: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((count, size, size, 3)).astype("float32")


def target_features(model, x):
    return model.target_projector(model.target_backbone(x)).numpy()


@dataclass
class TrainedKind:
    model: BYOL
    run: object
    size: int
    x: np.ndarray
    start_online: np.ndarray  # features before training
    start_target: np.ndarray
    shared_variables: int


@pytest.fixture(scope="module", params=list(KINDS))
def trained(request, tmp_path_factory) -> TrainedKind:
    """BYOL on one kind of backbone after two fit steps, saved as a finished run."""
    size, build = KINDS[request.param]
    keras.utils.set_random_seed(0)
    backbone, options = build()
    model = BYOL(backbone, tau_base=0.9, **HEADS, **options)
    x = images(size)
    online_ids = {id(v) for v in model.online_backbone.weights + model.online_projector.weights}
    target_ids = {id(v) for v in model.target_backbone.weights + model.target_projector.weights}
    start_online = model.online_projector(model.online_backbone(x)).numpy()
    start_target = target_features(model, x)
    # A modest step: at 0.5 MobileNet's BatchNorm scales grow to ~60 and float32 itself
    # then differs from float64 by more than the export tolerance.
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    pairs = tf.data.Dataset.from_tensor_slices((x, x[::-1])).batch(8)
    model.fit(pairs, epochs=1, verbose=0, shuffle=False)
    run = save_as_run(model, tmp_path_factory.mktemp(request.param) / "run", size)
    return TrainedKind(
        model, run, size, x, start_online, start_target, len(online_ids & target_ids)
    )


def test_target_starts_as_an_independent_copy_with_equal_weights(trained):
    assert trained.model.online_backbone is not trained.model.target_backbone
    assert trained.shared_variables == 0
    np.testing.assert_allclose(trained.start_target, trained.start_online, atol=1e-6)
    # Two steps with τ < 1 moved the two networks apart: they share no variable.
    assert not np.allclose(target_features(trained.model, trained.x), trained.start_target)
    assert not np.allclose(
        target_features(trained.model, trained.x),
        trained.model.online_projector(trained.model(trained.x)).numpy(),
    )


def test_each_kind_reloads_to_the_same_outputs(trained):
    model, x = trained.model, trained.x
    restored = load_model(trained.run.model_path)
    assert isinstance(restored, BYOL)
    assert type(restored.online_backbone) is type(model.online_backbone)
    np.testing.assert_array_equal(restored(x), model(x))
    np.testing.assert_array_equal(target_features(restored, x), target_features(model, x))
    backbone = load_model(trained.run.backbone_path)
    np.testing.assert_array_equal(backbone(x), model(x))
    # get_config / from_config rebuild the same architecture with fresh weights.
    rebuilt = BYOL.from_config(model.get_config())
    assert [w.shape for w in rebuilt.weights] == [w.shape for w in model.weights]


@pytest.mark.slow
def test_each_kind_exports_with_verified_parity(trained):
    manifest = export_run(trained.run.root)
    verification = manifest["verification"]
    assert verification["passed"] is True
    features = trained.model(trained.x).shape[-1]
    assert manifest["outputs"]["embeddings"]["shape"] == [None, features]
    for artifact in ("saved_model", "onnx"):
        for per_output in verification[artifact].values():
            assert all(check["passed"] for check in per_output.values())
    # The SavedModel computes the Keras backbone on images at the training size.
    pixels = (trained.x[:4] * 255).round().astype(np.uint8)
    serve = tf.saved_model.load(manifest["version_dir"]).signatures["serving_default"]
    reference = trained.model(pixels.astype("float32") / 255.0).numpy()
    embeddings = serve(images=tf.constant(pixels))["embeddings"].numpy()
    np.testing.assert_allclose(embeddings, reference, atol=1e-4 * (1 + np.abs(reference).max()))


def test_sequential_without_input_needs_input_shape():
    layers = [keras.layers.Conv2D(8, 3, activation="relu"), keras.layers.GlobalAveragePooling2D()]
    with pytest.raises(UsageError, match=r"input_shape=") as error:
        BYOL(keras.Sequential(layers), **HEADS)
    assert "\n" not in str(error.value)
    model = BYOL(keras.Sequential(layers), input_shape=(16, 16, 3), **HEADS)
    x = images(16, count=4)
    assert model(x).shape == (4, 8)
    np.testing.assert_allclose(target_features(model, x), model.online_projector(model(x)))


def test_a_backbone_that_returns_feature_maps_is_refused_in_one_line():
    conv = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(8, 3)])
    with pytest.raises(UsageError, match=r"pooled features.*\(None, 14, 14, 8\)") as error:
        BYOL(conv, **HEADS)
    assert "\n" not in str(error.value)


def test_subclassed_backbone_without_config_trains_like_a_cloned_one():
    # Reference: the same network with a config, whose target is re-created from it.
    keras.utils.set_random_seed(0)
    reference = BYOL(ConvNet(width=4), tau_base=0.9, input_shape=(16, 16, 3), **HEADS)
    with pytest.raises(NotImplementedError):
        ConvNetWithoutConfig(keras.layers.Conv2D(4, 3, use_bias=False)).get_config()
    model = BYOL(
        ConvNetWithoutConfig(keras.layers.Conv2D(4, 3, use_bias=False)),
        tau_base=0.9,
        input_shape=(16, 16, 3),
        **HEADS,
    )
    assert isinstance(model.target_backbone, SharedCodeCopy)
    model.set_weights(reference.get_weights())
    online = {id(v) for v in model.online_backbone.weights}
    assert online.isdisjoint(id(v) for v in model.target_backbone.weights)

    x = images(16, count=8)
    for byol in (reference, model):
        byol.compile(optimizer=keras.optimizers.SGD(0.5, momentum=0.9))
        for _ in range(2):
            byol.train_on_batch(x, x[::-1])
    # Same EMA, same BatchNorm statistics in the target: every variable matches.
    for mine, theirs in zip(model.weights, reference.weights, strict=True):
        np.testing.assert_allclose(mine.numpy(), theirs.numpy(), atol=1e-5)
    assert not np.allclose(target_features(model, x), model.online_projector(model(x)))


def test_kerashub_backbone_trains_saves_and_reloads(tmp_path):
    keras_hub = pytest.importorskip(
        "keras_hub", reason="keras_hub is not installed (the test extra installs it)"
    )
    keras.utils.set_random_seed(0)
    hub = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64],
        input_conv_kernel_sizes=[3],
        stackwise_num_filters=[64],  # KerasHub 0.32 requires 64 here and in the stem
        stackwise_num_blocks=[1],
        stackwise_num_strides=[1],
        block_type="basic_block",
        image_shape=(16, 16, 3),
    )
    # KerasHub backbones return feature maps; BYOL takes pooled features.
    backbone = keras.Sequential(
        [keras.Input((16, 16, 3)), hub, keras.layers.GlobalAveragePooling2D()]
    )
    model = BYOL(backbone, **HEADS)
    x = images(16, count=8)
    np.testing.assert_allclose(target_features(model, x), model.online_projector(model(x)))
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    model.fit(tf.data.Dataset.from_tensor_slices((x, x[::-1])).batch(4), shuffle=False, verbose=0)
    model.save(tmp_path / "byol.keras")
    restored = load_model(tmp_path / "byol.keras")
    np.testing.assert_array_equal(restored(x), model(x))


def test_strided_projection_is_the_strided_convolution_of_its_kernel():
    """The shortcut keeps every second pixel, then convolves: a 1x1 stride-2 convolution."""
    backbone = build_backbone("resnet18", 20, stem="cifar", width=4)
    images = tf.random.uniform([2, 20, 20, 3], seed=1) * 255.0
    block_input = backbone.get_layer("stage1_block2_out").output
    projection = backbone.get_layer("stage2_block1_proj_conv")
    probe = keras.Model(backbone.inputs, [block_input, projection.output])
    features, projected = probe(images)
    expected = tf.nn.conv2d(features, projection.kernel, strides=2, padding="SAME")
    np.testing.assert_allclose(projected, expected, rtol=1e-5, atol=1e-5)


ONEDNN_CRASH_CASE = """
import os
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np
import tensorflow as tf
from byol_keras import BYOL, resnet
model = BYOL(resnet(64, "basic", (1, 1), stem="cifar", width=8),
             projection_dim=8, projector_hidden_dim=16, predictor_hidden_dim=16)
model.compile(optimizer="adam")
pairs = np.random.default_rng(0).uniform(0, 255, (2, 2, 64, 64, 3)).astype("float32")
model.fit(tf.data.Dataset.from_tensor_slices((pairs[0], pairs[1])).batch(2), verbose=0)
print("trained")
"""


def test_a_width_whose_strided_1x1_gradient_crashes_onednn_trains_with_it_on():
    """TensorFlow's oneDNN kernel dies on width 8's first shortcut; the backbone avoids it."""
    environment = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", ONEDNN_CRASH_CASE],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-1] == "trained"
