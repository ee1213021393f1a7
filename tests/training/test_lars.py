import keras
import numpy as np
import pytest

from byol_keras.config import OptimizerConfig
from byol_keras.training.lars import LARS
from byol_keras.training.optimizers import build_optimizer


def _reference_step(w, g, v, lr, momentum, weight_decay, eta, adapted):
    """DeepMind's LARS update written out in numpy, one variable at a time."""
    if adapted:
        g = g + weight_decay * w
        w_norm, g_norm = np.linalg.norm(w), np.linalg.norm(g)
        trust = eta * w_norm / g_norm if w_norm > 0 and g_norm > 0 else 1.0
        lr = lr * trust
    v = momentum * v + lr * g
    return w - v, v


def _dense():
    layer = keras.layers.Dense(3)
    layer.build((None, 4))
    rng = np.random.default_rng(0)
    layer.kernel.assign(rng.normal(size=(4, 3)).astype("float32"))
    layer.bias.assign(rng.normal(size=(3,)).astype("float32"))
    return layer


def test_two_steps_match_hand_computation():
    layer = _dense()
    lr, momentum, wd, eta = 0.5, 0.9, 0.01, 0.02
    optimizer = LARS(lr, momentum=momentum, weight_decay=wd, trust_coefficient=eta)
    rng = np.random.default_rng(1)
    weights = {"kernel": layer.kernel.numpy(), "bias": layer.bias.numpy()}
    velocity = {name: np.zeros_like(w) for name, w in weights.items()}
    for _ in range(2):
        grads = {
            "kernel": rng.normal(size=(4, 3)).astype("float32"),
            "bias": rng.normal(size=(3,)).astype("float32"),
        }
        optimizer.apply_gradients([(grads["kernel"], layer.kernel), (grads["bias"], layer.bias)])
        for name in weights:
            weights[name], velocity[name] = _reference_step(
                weights[name],
                grads[name],
                velocity[name],
                lr,
                momentum,
                wd,
                eta,
                adapted=(name == "kernel"),
            )
    np.testing.assert_allclose(layer.kernel.numpy(), weights["kernel"], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(layer.bias.numpy(), weights["bias"], rtol=1e-5, atol=1e-7)


def test_trust_ratio_scales_kernel_but_not_bias_or_batchnorm():
    layer = _dense()
    norm = keras.layers.BatchNormalization()
    norm.build((None, 3))
    optimizer = LARS(1.0, momentum=0.0, trust_coefficient=1e-3)
    optimizer.build([layer.kernel, layer.bias, norm.gamma, norm.beta])
    assert [optimizer.is_adapted(v) for v in (layer.kernel, layer.bias, norm.gamma, norm.beta)] == [
        True,
        False,
        False,
        False,
    ]
    kernel_before, bias_before = layer.kernel.numpy(), layer.bias.numpy()
    ones_kernel, ones_bias = np.ones((4, 3), "float32"), np.ones((3,), "float32")
    optimizer.apply_gradients([(ones_kernel, layer.kernel), (ones_bias, layer.bias)])
    # The bias moves by the full lr·g; the kernel by η‖w‖/‖g‖ of it.
    np.testing.assert_allclose(bias_before - layer.bias.numpy(), 1.0, rtol=1e-6)
    expected = 1e-3 * np.linalg.norm(kernel_before) / np.linalg.norm(ones_kernel)
    np.testing.assert_allclose(kernel_before - layer.kernel.numpy(), expected, rtol=1e-5)


def test_zero_weights_fall_back_to_plain_sgd():
    variable = keras.Variable(np.zeros((2, 2), "float32"), name="kernel")
    optimizer = LARS(0.1, momentum=0.0, trust_coefficient=1e-3)
    optimizer.apply_gradients([(np.ones((2, 2), "float32"), variable)])
    np.testing.assert_allclose(variable.numpy(), -0.1)


def test_config_round_trip_and_model_save(tmp_path):
    optimizer = LARS(0.3, momentum=0.8, weight_decay=1e-5, trust_coefficient=0.02)
    clone = LARS.from_config(optimizer.get_config())
    assert (clone.momentum, clone.lars_weight_decay, clone.trust_coefficient) == (0.8, 1e-5, 0.02)

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile(optimizer=optimizer, loss="mse")
    model.fit(np.ones((8, 4)), np.zeros((8, 2)), epochs=1, verbose=0)
    model.save(tmp_path / "m.keras")
    reloaded = keras.models.load_model(tmp_path / "m.keras")
    assert isinstance(reloaded.optimizer, LARS)
    assert reloaded.optimizer.trust_coefficient == 0.02


def test_bad_hyperparameters_are_rejected():
    with pytest.raises(ValueError, match="momentum"):
        LARS(0.1, momentum=1.0)
    with pytest.raises(ValueError, match="trust_coefficient"):
        LARS(0.1, trust_coefficient=0.0)


def test_build_optimizer_wires_lars_with_accumulation():
    config = OptimizerConfig(name="lars", base_lr=1.0, weight_decay=1e-5, trust_coefficient=0.02)
    optimizer = build_optimizer(
        config, 64, total_steps=100, steps_per_epoch=10, accumulation_steps=4
    )
    assert isinstance(optimizer, LARS)
    assert optimizer.gradient_accumulation_steps == 4
    # Effective batch 256 → peak lr = base_lr; step 0 is the start of warm-up.
    assert float(optimizer.learning_rate) < 1.0
