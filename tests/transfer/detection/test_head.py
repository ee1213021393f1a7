"""The RetinaNet head of a chosen width: KerasCV's head at 256, narrower convolutions otherwise."""

import keras
import keras_cv
import numpy as np

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
