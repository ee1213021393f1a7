"""Gradient accumulation: the EMA target, τ and the learning rate follow real optimizer updates."""

import keras
import numpy as np
import pytest

from byol_keras.config import OptimizerConfig
from byol_keras.methods.base import _TotalStepsFromFit
from byol_keras.methods.byol import cosine_tau
from byol_keras.training.optimizers import build_optimizer
from byol_keras.training.schedules import WarmupCosine
from tests.helpers.views import ema_pairs, view_pair


def _model_with_accumulation(tiny_byol, steps=2, tau_base=0.9, total_steps=10):
    model = tiny_byol(tau_base=tau_base, total_steps=total_steps)
    model.compile(optimizer=keras.optimizers.SGD(0.5, gradient_accumulation_steps=steps))
    # Make target differ from online so that any EMA mix shows in every weight.
    rng = np.random.default_rng(3)
    for _, target in ema_pairs(model):
        target.assign(target.numpy() + rng.normal(scale=0.05, size=target.shape))
    return model


def _snapshot(model):
    return [o.numpy() for o, _ in ema_pairs(model)], [t.numpy() for _, t in ema_pairs(model)]


def test_target_moves_once_per_update_not_per_micro_step(tiny_byol):
    model = _model_with_accumulation(tiny_byol, steps=2, tau_base=0.9, total_steps=10)
    online_before, target_before = _snapshot(model)

    model.train_on_batch(*view_pair(seed=0))  # micro-step 1 of 2: no update yet
    online_after, target_after = _snapshot(model)
    for before, after in zip(
        online_before + target_before, online_after + target_after, strict=True
    ):
        np.testing.assert_array_equal(after, before)
    assert int(model.optimizer.iterations.numpy()) == 0

    model.train_on_batch(*view_pair(seed=1))  # micro-step 2 of 2: one update
    online_after, target_after = _snapshot(model)
    tau = 0.9  # τ at update 0 of 10: the cosine starts at tau_base
    moved = 0
    for xi, theta, target in zip(target_before, online_after, target_after, strict=True):
        np.testing.assert_allclose(target, tau * xi + (1 - tau) * theta, atol=1e-6)
        moved += not np.allclose(target, xi)
    assert moved > 0
    assert int(model.optimizer.iterations.numpy()) == 1

    model.train_on_batch(*view_pair(seed=2))
    model.train_on_batch(*view_pair(seed=3))
    # Four batches are two updates: the next τ is the schedule's at update 2, not 4.
    assert float(model.current_tau()) == pytest.approx(float(cosine_tau(2, 10, 0.9)))


def test_learning_rate_schedule_is_evaluated_in_updates(tiny_byol):
    config = OptimizerConfig(name="sgd", base_lr=1.0, lr_scaling="none", warmup_epochs=0)
    optimizer = build_optimizer(
        config, batch_size=8, total_steps=10, steps_per_epoch=5, accumulation_steps=2
    )
    model = tiny_byol(tau_base=0.9, total_steps=10)
    model.compile(optimizer=optimizer)
    optimizer.build(model.trainable_variables)
    plain = WarmupCosine(peak_lr=1.0, total_steps=10)
    optimizer._iterations.assign(7)  # the 8th batch: the one that takes update 3
    assert float(optimizer.learning_rate) == pytest.approx(float(plain(3)))
    assert float(optimizer.learning_rate) != pytest.approx(float(plain(7)))


def test_schedule_length_from_fit_counts_updates(tiny_byol):
    model = tiny_byol(tau_base=0.9, total_steps=None)
    model.compile(optimizer=keras.optimizers.SGD(0.01, gradient_accumulation_steps=2))
    callback = _TotalStepsFromFit()
    callback.set_model(model)
    callback.set_params({"steps": 6, "epochs": 3})
    callback.on_train_begin()
    assert int(model.total_steps.numpy()) == 9  # 18 batches, 9 updates
