"""The cosine τ schedule and the warm-up cosine learning rate against hand values."""

import math

import pytest

from byol_keras.training.schedules import WarmupCosine, cosine_tau


@pytest.mark.parametrize("tau_base", [0.996, 0.99, 0.9])
def test_cosine_tau_goes_from_base_to_one(tau_base):
    total = 1000
    assert float(cosine_tau(0, total, tau_base)) == pytest.approx(tau_base, abs=1e-7)
    assert float(cosine_tau(total, total, tau_base)) == pytest.approx(1.0, abs=1e-7)
    for step in (1, 250, 500, 999):
        expected = 1 - (1 - tau_base) * (math.cos(math.pi * step / total) + 1) / 2
        assert float(cosine_tau(step, total, tau_base)) == pytest.approx(expected, abs=1e-6)
    assert float(cosine_tau(total + 50, total, tau_base)) == pytest.approx(1.0, abs=1e-7)


def test_warmup_cosine_matches_hand_values():
    schedule = WarmupCosine(peak_lr=2.0, total_steps=110, warmup_steps=10, final_lr=0.0)
    assert float(schedule(0)) == pytest.approx(0.2)
    assert float(schedule(9)) == pytest.approx(2.0)
    assert float(schedule(10)) == pytest.approx(2.0)
    assert float(schedule(60)) == pytest.approx(1.0, abs=1e-6)
    assert float(schedule(110)) == pytest.approx(0.0, abs=1e-6)
    assert WarmupCosine(**schedule.get_config()).get_config() == schedule.get_config()
