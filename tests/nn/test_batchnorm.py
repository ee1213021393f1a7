import keras
import numpy as np
import pytest
import tensorflow as tf

from byol_keras.nn.batchnorm import BatchNormalization


def _pair(shape, **kwargs):
    """A fused layer and Keras's own, built with the same random weights and statistics.

    Returns both layers and the weights: gamma, beta, moving mean, moving variance.
    """
    fused = BatchNormalization(**kwargs)
    reference = keras.layers.BatchNormalization(**kwargs)
    fused.build(shape)
    reference.build(shape)
    rng = np.random.default_rng(0)
    weights = [rng.uniform(0.5, 1.5, w.shape).astype("float32") for w in reference.weights]
    fused.set_weights(weights)
    reference.set_weights(weights)
    return fused, reference, weights


def _train_call(layer, x, dtype="float32"):
    x = tf.constant(x, dtype)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=True)
        loss = tf.reduce_sum(y * tf.sin(y))  # a loss whose gradient varies per element
    grads = tape.gradient(loss, [x, *layer.trainable_weights])
    return [t.numpy().astype("float64") for t in (y, *grads)]


@pytest.mark.parametrize("shape", [(6, 5, 7, 3), (8, 2, 2, 64), (16, 9)])
def test_training_step_is_as_exact_as_keras_batchnorm(shape):
    fused, reference, (_, _, initial_mean, initial_variance) = _pair(shape, momentum=0.9)
    exact = keras.layers.BatchNormalization(momentum=0.9, dtype="float64")
    exact.build(shape)
    exact.set_weights(reference.get_weights())
    rng = np.random.default_rng(1)
    # Channels of different means and scales, as a ReLU network's activations have.
    x = (rng.normal(2.0, 1.0, shape) * rng.uniform(0.1, 3.0, shape[-1])).astype("float32")

    outputs = _train_call(fused, x)  # the output, then the gradients of x, gamma and beta
    keras_outputs = _train_call(reference, x)
    exact_outputs = _train_call(exact, x, "float64")

    for out, keras_out, exact_out in zip(outputs, keras_outputs, exact_outputs, strict=True):
        scale = np.abs(exact_out).max()
        # float32 rounding, no more: Keras's own ops land within ~1e-6 of float64 too.
        assert np.abs(out - exact_out).max() / scale < 3e-6
        assert np.abs(keras_out - exact_out).max() / scale < 3e-6
    # The moving statistics take the batch's biased variance, as Keras's do.
    axes = tuple(range(len(shape) - 1))
    np.testing.assert_allclose(
        fused.moving_mean.numpy(), 0.9 * initial_mean + 0.1 * x.mean(axis=axes), rtol=1e-5
    )
    np.testing.assert_allclose(
        fused.moving_variance.numpy(), 0.9 * initial_variance + 0.1 * x.var(axis=axes), rtol=1e-4
    )


def test_inference_and_unfused_training_are_keras_code():
    shape = (4, 3, 3, 2)
    x = np.random.default_rng(2).normal(size=shape).astype("float32")
    fused, reference, _ = _pair(shape)
    np.testing.assert_array_equal(fused(x, training=False), reference(x, training=False))
    fused.fused = False
    np.testing.assert_array_equal(fused(x, training=True), reference(x, training=True))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float64"])
def test_a_layer_of_another_float_dtype_trains_as_keras_batchnorm_does(dtype):
    shape = (6, 3, 3, 4)
    fused, reference = BatchNormalization(dtype=dtype), keras.layers.BatchNormalization(dtype=dtype)
    x = np.random.default_rng(3).normal(2.0, 1.5, shape).astype("float32")
    for training in (True, False):
        out, expected = fused(x, training=training), reference(x, training=training)
        assert out.dtype == expected.dtype == dtype
        # The fused kernel takes float32 statistics only, so these dtypes run Keras's ops:
        # the same ops on the same numbers, equal to the last bit.
        np.testing.assert_array_equal(np.float64(out), np.float64(expected))
    for weight, expected in zip(fused.weights, reference.weights, strict=True):
        np.testing.assert_array_equal(np.float64(weight.numpy()), np.float64(expected.numpy()))


def test_survives_a_saved_model_round_trip(tmp_path):
    inputs = keras.Input((4, 4, 3))
    model = keras.Model(inputs, BatchNormalization(momentum=0.8, fused=False)(inputs))
    model.save(tmp_path / "model.keras")
    layer = keras.models.load_model(tmp_path / "model.keras").layers[-1]
    assert isinstance(layer, BatchNormalization)
    assert (layer.fused, layer.momentum) == (False, 0.8)


@pytest.mark.parametrize("fused", [True, False])
def test_training_runs_the_fused_kernel_only_when_fused(fused):
    layer = BatchNormalization(fused=fused)
    trace = tf.function(lambda x: layer(x, training=True)).get_concrete_function(
        tf.TensorSpec([4, 3, 3, 2], tf.float32)
    )
    op_types = {op.type for op in trace.graph.get_operations()}
    assert ("FusedBatchNormV3" in op_types) == fused


def test_weights_saved_with_keras_batchnorm_load_into_it(tmp_path):
    def model(norm):
        inputs = keras.Input((4, 4, 3))
        return keras.Model(inputs, norm(name="bn")(keras.layers.Conv2D(2, 1)(inputs)))

    keras.utils.set_random_seed(0)
    saved = model(keras.layers.BatchNormalization)
    saved.layers[-1].set_weights([np.full(2, value, "float32") for value in (2, 3, 4, 5)])
    saved.save_weights(tmp_path / "keras_bn.weights.h5")
    loaded = model(BatchNormalization)
    loaded.load_weights(tmp_path / "keras_bn.weights.h5")
    for weight, expected in zip(loaded.weights, saved.weights, strict=True):
        np.testing.assert_array_equal(weight.numpy(), expected.numpy())
