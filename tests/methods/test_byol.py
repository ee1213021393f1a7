import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from byol_keras.methods.byol import BYOL, cosine_tau
from byol_keras.registration import load_model
from tests.helpers.views import ema_pairs, view_pair


def test_target_starts_as_copy_and_is_invisible_to_optimizer(tiny_byol):
    model = tiny_byol(tau_base=0.9, total_steps=10)
    for online, target in ema_pairs(model):
        np.testing.assert_array_equal(online.numpy(), target.numpy())
    target_ids = {id(v) for v in model.target_backbone.weights + model.target_projector.weights}
    assert target_ids.isdisjoint(id(v) for v in model.trainable_variables)
    online = model.online_backbone.trainable_weights + model.online_projector.trainable_weights
    assert len(model.trainable_variables) == len(online) + len(model.predictor.trainable_weights)


def test_one_step_applies_ema_with_scheduled_tau(tiny_byol):
    model = tiny_byol(tau_base=0.9, total_steps=10)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.5, momentum=0.9))
    # Make target differ from online so that the mix is visible in every weight.
    rng = np.random.default_rng(3)
    for _, target in ema_pairs(model):
        target.assign(target.numpy() + rng.normal(scale=0.05, size=target.shape))
    target_before = [t.numpy() for _, t in ema_pairs(model)]
    online_before = [o.numpy() for o, _ in ema_pairs(model)]

    model.train_on_batch(*view_pair())

    tau = float(cosine_tau(0, 10, 0.9))
    assert tau == pytest.approx(0.9)
    moved = 0
    for (online, target), xi, theta_before in zip(
        ema_pairs(model), target_before, online_before, strict=True
    ):
        theta = online.numpy()
        moved += not np.allclose(theta, theta_before)
        np.testing.assert_allclose(target.numpy(), tau * xi + (1 - tau) * theta, atol=1e-6)
    assert moved > 0, "the optimizer step changed no online weight"


def test_target_gets_no_gradient_update(tiny_byol):
    # With tau = 1 the EMA keeps the target exactly; any optimizer update would show.
    model = tiny_byol(tau_base=1.0, total_steps=10)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=1.0))
    target_before = [t.numpy() for _, t in ema_pairs(model)]
    for _ in range(3):
        model.train_on_batch(*view_pair())
    for (_, target), before in zip(ema_pairs(model), target_before, strict=True):
        np.testing.assert_array_equal(target.numpy(), before)
    assert len(model.optimizer.variables) < 3 * len(model.trainable_variables) + 4


def test_tau_schedule_reaches_one_when_training_ends(tiny_byol):
    model = tiny_byol(tau_base=0.99, total_steps=None)
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    view1, view2 = view_pair(batch=16)
    data = tf.data.Dataset.from_tensor_slices((view1, view2)).batch(4)
    history = model.fit(data, epochs=2, verbose=0)
    assert int(model.total_steps.numpy()) == 8
    assert float(model.current_tau()) == pytest.approx(1.0)
    # The first epoch ends with step 3 of 8: its logged τ is that step's.
    assert history.history["tau"][0] == pytest.approx(float(cosine_tau(3, 8, 0.99)), abs=1e-6)


def test_logged_tau_is_the_current_value_not_the_epoch_mean(tiny_byol):
    # One epoch of 4 steps whose schedule ends at τ = 1.
    model = tiny_byol(tau_base=0.9, total_steps=None)
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    view1, view2 = view_pair(batch=16)
    data = tf.data.Dataset.from_tensor_slices((view1, view2)).batch(4)
    per_step = _BatchTaus()
    history = model.fit(data, epochs=1, verbose=0, callbacks=[per_step])
    # By hand: the last step taken is k = 3 of K = 4, τ = 1 - 0.1 (cos(3π/4) + 1) / 2.
    last = 1 - 0.1 * (np.cos(3 * np.pi / 4) + 1) / 2
    assert history.history["tau"][-1] == pytest.approx(last, abs=1e-6)
    # What the progress bar shows after each step: that step's τ.
    expected = [float(cosine_tau(k, 4, 0.9)) for k in range(4)]
    np.testing.assert_allclose(per_step.taus, expected, atol=1e-6)
    assert expected[-1] == pytest.approx(last, abs=1e-6)
    assert float(model.current_tau()) == pytest.approx(1.0)  # τ of the next update


class _BatchTaus(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.taus = []

    def on_train_batch_end(self, batch, logs=None):
        self.taus.append(float(logs["tau"]))


def test_save_load_round_trip_is_identical_and_trains_on_identically(tiny_byol, tmp_path):
    model = tiny_byol(tau_base=0.9, total_steps=10)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1, momentum=0.9))
    view1, view2 = view_pair()
    model.train_on_batch(view1, view2)
    path = tmp_path / "byol.keras"
    model.save(path)
    restored = load_model(path)

    assert isinstance(restored, BYOL)
    np.testing.assert_array_equal(model(view1), restored(view1))
    np.testing.assert_array_equal(
        model.target_projector(model.target_backbone(view1)),
        restored.target_projector(restored.target_backbone(view1)),
    )
    assert int(restored.optimizer.iterations.numpy()) == 1
    model.train_on_batch(view2, view1)
    restored.train_on_batch(view2, view1)
    for original, reloaded in zip(model.weights, restored.weights, strict=True):
        np.testing.assert_allclose(original.numpy(), reloaded.numpy(), atol=1e-6)


def test_backbone_is_standalone_model(tiny_byol, tmp_path):
    model = tiny_byol(tau_base=0.9, total_steps=10)
    view1, _ = view_pair()
    model.online_backbone.save(tmp_path / "backbone.keras")
    backbone = load_model(tmp_path / "backbone.keras")
    np.testing.assert_array_equal(backbone(view1), model(view1))


def test_test_step_reports_loss_without_changing_weights(tiny_byol):
    model = tiny_byol(tau_base=0.9, total_steps=10)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    before = [w.numpy() for w in model.weights]
    result = model.evaluate(*view_pair(), batch_size=8, verbose=0, return_dict=True)
    assert 0.0 <= result["loss"] <= 8.0
    for weight, old in zip(model.weights, before, strict=True):
        np.testing.assert_array_equal(weight.numpy(), old)


def test_fit_without_pairs_or_augmenter_explains_itself(tiny_byol):
    model = tiny_byol(tau_base=0.9, total_steps=10)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    images = view_pair()[0]
    with pytest.raises(ValueError, match="view1, view2"):
        model.fit(tf.data.Dataset.from_tensor_slices(images).batch(4), epochs=1, verbose=0)


@pytest.mark.parametrize("tau_base", [0.996, 0.99, 0.9])
def test_cosine_tau_goes_from_base_to_one(tau_base):
    total = 1000
    assert float(cosine_tau(0, total, tau_base)) == pytest.approx(tau_base, abs=1e-7)
    assert float(cosine_tau(total, total, tau_base)) == pytest.approx(1.0, abs=1e-7)
    for step in (1, 250, 500, 999):
        expected = 1 - (1 - tau_base) * (math.cos(math.pi * step / total) + 1) / 2
        assert float(cosine_tau(step, total, tau_base)) == pytest.approx(expected, abs=1e-6)
    assert float(cosine_tau(total + 50, total, tau_base)) == pytest.approx(1.0, abs=1e-7)
