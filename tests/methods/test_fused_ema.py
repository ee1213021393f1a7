"""The fused EMA option of BYOL: the same target weights as the element-wise update."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from byol_keras.methods.byol import BYOL
from tests.helpers.views import ema_pairs, view_pair


def _scrambled(model, seed: int) -> None:
    """Gives online and target weights different random values, so every weight's mix shows."""
    rng = np.random.default_rng(seed)
    for online, target in ema_pairs(model):
        online.assign(rng.normal(size=online.shape).astype("float32"))
        target.assign(rng.normal(size=target.shape).astype("float32"))


@pytest.mark.parametrize("fused_ema", [False, True])
def test_update_target_matches_a_numpy_reference_loop(tiny_byol, fused_ema):
    model = tiny_byol(fused_ema=fused_ema)
    _scrambled(model, seed=5)
    before = [
        (o.numpy().astype("float64"), t.numpy().astype("float64")) for o, t in ema_pairs(model)
    ]
    tau = 0.93
    tf.function(model.update_target)(tf.constant(tau))
    for (online, target), (theta, xi) in zip(ema_pairs(model), before, strict=True):
        expected = tau * xi + (1 - tau) * theta
        np.testing.assert_allclose(target.numpy(), expected, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(online.numpy(), theta.astype("float32"))


def test_fused_and_elementwise_steps_agree_and_the_option_is_saved(tiny_byol):
    targets = {}
    for fused_ema in (False, True):
        model = tiny_byol(fused_ema=fused_ema, tau_base=0.9, total_steps=10)
        model.compile(optimizer=keras.optimizers.SGD(0.5, momentum=0.9))
        _scrambled(model, seed=7)
        for step in range(3):
            model.train_on_batch(*view_pair(seed=step))
        targets[fused_ema] = [t.numpy() for _, t in ema_pairs(model)]
        assert BYOL.from_config(model.get_config()).fused_ema is fused_ema
    for plain, fused in zip(targets[False], targets[True], strict=True):
        np.testing.assert_allclose(fused, plain, rtol=1e-5, atol=1e-6)
