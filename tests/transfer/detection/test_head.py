"""The RetinaNet head of a chosen width: KerasCV's head at 256, narrower convolutions otherwise."""

import keras
import keras_cv
import numpy as np
import tensorflow as tf

from byol_keras.transfer.detection.head import PredictionHead

FEATURES = np.random.default_rng(0).normal(size=(2, 4, 5, 32)).astype("float32")


def test_at_256_filters_it_computes_what_kerascv_s_own_head_computes():
    theirs = keras_cv.models.retinanet.PredictionHead(27, keras.initializers.Zeros(), 2)
    mine = PredictionHead(27, keras.initializers.Zeros(), 2, width=256)
    theirs.build(FEATURES.shape)
    mine.build(FEATURES.shape)
    for own, reference in zip(
        [*mine.conv_layers, mine.prediction_layer],
        [*theirs.conv_layers, theirs.prediction_layer],
        strict=True,
    ):
        own.set_weights(reference.get_weights())
    np.testing.assert_allclose(mine(FEATURES), theirs(FEATURES), atol=1e-5)


def test_its_convolutions_have_the_width_asked_for_and_it_reloads(tmp_path):
    head = PredictionHead(12, keras.initializers.Constant(-4.6), 3, width=8, init="orthogonal")
    model = keras.Sequential([keras.Input(FEATURES.shape[1:]), head])
    assert [layer.kernel.shape for layer in head.conv_layers] == [
        (3, 3, 32, 8),
        (3, 3, 8, 8),
        (3, 3, 8, 8),
    ]
    assert head.prediction_layer.kernel.shape == (3, 3, 8, 12)
    model.save(tmp_path / "head.keras")
    restored = keras.saving.load_model(tmp_path / "head.keras").layers[0]
    assert (restored.width, restored.num_conv_layers, restored.init) == (8, 3, "orthogonal")
    np.testing.assert_array_equal(restored(FEATURES), head(FEATURES))


def _group_norm(x: np.ndarray, groups: int, eps: float = 1e-5) -> np.ndarray:
    """GroupNorm at its initial scale and offset (1 and 0), by hand."""
    b, h, w, c = x.shape
    grouped = x.reshape(b, h, w, groups, c // groups)
    mean = grouped.mean(axis=(1, 2, 4), keepdims=True)
    var = grouped.var(axis=(1, 2, 4), keepdims=True)
    return ((grouped - mean) / np.sqrt(var + eps)).reshape(x.shape)


def _conv(x: np.ndarray, layer) -> np.ndarray:
    return np.asarray(
        tf.nn.conv2d(x, layer.kernel, strides=1, padding="SAME") + np.asarray(layer.bias)
    )


def test_group_norm_heads_normalise_their_input_and_every_convolution():
    head = PredictionHead(
        12, keras.initializers.Zeros(), 2, width=16, init="orthogonal", norm="group"
    )
    head.build(FEATURES.shape)
    expected = _group_norm(FEATURES, 32)  # 32 channels in: 32 groups
    for layer in head.conv_layers:
        expected = np.maximum(_group_norm(_conv(expected, layer), 16), 0.0)  # gcd(32, 16)
    expected = _conv(expected, head.prediction_layer)
    np.testing.assert_allclose(head(FEATURES), expected, atol=1e-4)


def test_group_norm_heads_see_features_of_any_scale_alike_and_reload(tmp_path):
    head = PredictionHead(12, keras.initializers.Zeros(), 2, width=8, norm="group")
    plain = PredictionHead(12, keras.initializers.Zeros(), 2, width=8, init="orthogonal")
    np.testing.assert_allclose(head(4.0 * FEATURES), head(FEATURES), atol=1e-4)
    assert not np.allclose(plain(4.0 * FEATURES), plain(FEATURES), atol=1e-2)
    model = keras.Sequential([keras.Input(FEATURES.shape[1:]), head])
    model.save(tmp_path / "head.keras")
    restored = keras.saving.load_model(tmp_path / "head.keras").layers[0]
    assert restored.norm == "group"
    np.testing.assert_array_equal(restored(FEATURES), head(FEATURES))
