"""The warm-up cosine learning rate against hand values."""

import keras
import pytest

from byol_keras.training.schedules import WarmupCosine


def test_warmup_cosine_matches_hand_values():
    schedule = WarmupCosine(peak_lr=2.0, total_steps=110, warmup_steps=10, final_lr=0.0)
    assert float(schedule(0)) == pytest.approx(0.2)
    assert float(schedule(9)) == pytest.approx(2.0)
    assert float(schedule(10)) == pytest.approx(2.0)
    assert float(schedule(60)) == pytest.approx(1.0, abs=1e-6)
    assert float(schedule(110)) == pytest.approx(0.0, abs=1e-6)
    assert WarmupCosine(**schedule.get_config()).get_config() == schedule.get_config()


@pytest.mark.parametrize(
    ("total", "warmup", "final"), [(110, 10, 0.0), (1000, 100, 0.04), (50, 0, 0.0)]
)
def test_the_curve_is_keras_cosine_decay_one_step_ahead_in_the_warm_up(total, warmup, final):
    peak = 0.4
    ours = WarmupCosine(peak, total_steps=total, warmup_steps=warmup, final_lr=final)
    keras_options = {"warmup_target": peak, "warmup_steps": warmup} if warmup else {}
    theirs = keras.optimizers.schedules.CosineDecay(
        0.0 if warmup else peak, decay_steps=total - warmup, alpha=final / peak, **keras_options
    )
    for step in range(total + 10):
        # Keras's warm-up reaches peak·k/w at step k; ours one step earlier.
        keras_step = step + 1 if step < warmup else step
        assert float(ours(step)) == pytest.approx(float(theirs(keras_step)), abs=1e-6), step
