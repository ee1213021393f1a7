"""The warm-up cosine learning rate against hand values."""

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
