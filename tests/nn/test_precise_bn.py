"""PreciseBN: each BatchNorm's statistics become the average over batches of its inputs' own."""

import keras
import numpy as np
import pytest

from byol_keras.nn.batchnorm import BatchNormalization
from byol_keras.nn.precise_bn import PreciseBN

RNG = np.random.default_rng(0)
# Batches of differing scale: the mean of their variances is not their pooled variance.
BATCHES = [(RNG.normal(size=(6, 8, 8, 3)) * (1 + k)).astype("float32") for k in range(5)]


def _model():
    """Keras's BN, the project's fused one in a nested model, one on vectors, one frozen.

    Returns the model, its trainable BN layers, and a model from the images to their inputs.
    """
    images = keras.Input((8, 8, 3))
    first_in = keras.layers.Conv2D(4, 3, padding="same")(images)
    first = keras.layers.BatchNormalization(momentum=0.9)
    hidden = keras.layers.ReLU()(first(first_in))
    block_images = keras.Input((8, 8, 4))
    inner_in = keras.layers.Conv2D(5, 3, padding="same")(block_images)
    inner = BatchNormalization()
    block = keras.Model(block_images, keras.layers.ReLU()(inner(inner_in)), name="block")
    frozen = BatchNormalization(name="frozen")
    frozen.trainable = False
    pooled = keras.layers.GlobalAveragePooling2D()(frozen(block(hidden)))
    vector_in = keras.layers.Dense(7)(pooled)
    vector = BatchNormalization()
    model = keras.Model(images, vector(vector_in))
    to_block = keras.Model(images, [first_in, hidden, vector_in])
    block_inputs = keras.Model(block_images, inner_in)

    def norm_inputs(batch):
        """The inputs of first, inner and vector in training mode, as fit would see them."""
        first_x, hidden_x, vector_x = to_block(batch, training=True)
        return [np.asarray(first_x), np.asarray(block_inputs(hidden_x)), np.asarray(vector_x)]

    return model, [first, inner, vector], frozen, norm_inputs


def _statistics_by_hand(norm_inputs, batches):
    per_batch = [norm_inputs(batch) for batch in batches]
    means, variances = [], []
    for index in range(3):
        inputs = [batch[index].reshape(-1, batch[index].shape[-1]) for batch in per_batch]
        means.append(np.mean([x.mean(axis=0) for x in inputs], axis=0))
        variances.append(np.mean([x.var(axis=0) for x in inputs], axis=0))  # biased, per batch
    return means, variances


def _scramble(norms):
    for layer in norms:
        layer.moving_mean.assign(RNG.normal(size=layer.moving_mean.shape) * 10)
        layer.moving_variance.assign(RNG.uniform(5, 50, size=layer.moving_variance.shape))


def test_moving_statistics_become_the_average_of_each_batch_s_own():
    keras.utils.set_random_seed(0)
    model, norms, frozen, norm_inputs = _model()
    _scramble([*norms, frozen])  # nothing of the old statistics may remain
    means, variances = _statistics_by_hand(norm_inputs, BATCHES[:4])
    untouched = {
        w.path: np.asarray(w)
        for w in model.weights
        if not any(w is n.moving_mean or w is n.moving_variance for n in norms)
    }
    assert PreciseBN(model)(iter(BATCHES), num_batches=4) == 4
    for layer, mean, variance in zip(norms, means, variances, strict=True):
        np.testing.assert_allclose(layer.moving_mean, mean, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(layer.moving_variance, variance, rtol=1e-4, atol=1e-5)
    # Every other weight, the frozen layer's statistics included, and the momenta are unchanged.
    assert len(untouched) == len(model.weights) - 2 * len(norms)
    for weight in model.weights:
        if weight.path in untouched:
            np.testing.assert_array_equal(weight, untouched[weight.path], err_msg=weight.path)
    assert [layer.momentum for layer in norms] == [0.9, 0.99, 0.99]


def test_fewer_batches_than_asked_average_those_there_are_and_none_changes_nothing():
    keras.utils.set_random_seed(0)
    model, norms, _, norm_inputs = _model()
    means, _ = _statistics_by_hand(norm_inputs, BATCHES[:2])
    precise = PreciseBN(model)
    assert precise(BATCHES[:2], num_batches=20) == 2
    np.testing.assert_allclose(norms[0].moving_mean, means[0], rtol=1e-4, atol=1e-5)
    before = [np.asarray(w) for w in model.weights]
    assert precise(BATCHES, num_batches=0) == 0 and precise([], num_batches=3) == 0
    for weight, value in zip(model.weights, before, strict=True):
        np.testing.assert_array_equal(weight, value)


def test_a_failing_batch_leaves_the_statistics_and_momenta_as_they_were():
    keras.utils.set_random_seed(0)
    model, norms, _, _ = _model()
    before = [np.asarray(w) for w in model.weights]

    def batches():
        yield BATCHES[0]
        raise OSError("unreadable")

    with pytest.raises(OSError, match="unreadable"):
        PreciseBN(model)(batches(), num_batches=2)
    for weight, value in zip(model.weights, before, strict=True):
        np.testing.assert_array_equal(weight, value)
    assert [layer.momentum for layer in norms] == [0.9, 0.99, 0.99]


def test_a_run_model_that_misses_a_batchnorm_is_refused():
    model, _, _, _ = _model()
    with pytest.raises(ValueError, match="does not call"):
        PreciseBN(model, run=model.get_layer("block"))
