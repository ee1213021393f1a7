import numpy as np
import pytest

from byol_keras.nn.losses import collapse_indicator, normalized_mse, symmetric_byol_loss


def _hand_cosine(a, b):
    return np.array(
        [x @ y / (np.linalg.norm(x) * np.linalg.norm(y)) for x, y in zip(a, b, strict=True)]
    )


def test_symmetric_loss_sums_both_directions_then_averages_the_batch():
    rng = np.random.default_rng(0)
    q1, q2, z1, z2 = (rng.normal(size=(5, 7)).astype("float32") for _ in range(4))
    direction_12 = 2 - 2 * _hand_cosine(q1, z2)
    direction_21 = 2 - 2 * _hand_cosine(q2, z1)
    expected = np.mean(direction_12 + direction_21)
    loss = float(symmetric_byol_loss(q1, q2, z1, z2))
    assert loss == pytest.approx(expected, rel=1e-5)
    # The averaged-directions bug (lightly #1037) would give half of this.
    assert loss != pytest.approx(expected / 2, rel=1e-3)


def test_normalized_mse_bounds_and_scale_invariance():
    x = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 3.0]], "float32")
    y = np.array([[5.0, 0.0], [-2.0, 0.0], [4.0, 0.0]], "float32")
    np.testing.assert_allclose(normalized_mse(x, y), [0.0, 4.0, 2.0], atol=1e-6)


def test_collapse_indicator_is_near_one_when_spread_and_zero_when_collapsed():
    rng = np.random.default_rng(1)
    spread = rng.normal(size=(4096, 64)).astype("float32")
    assert float(collapse_indicator(spread)) == pytest.approx(1.0, abs=0.03)
    collapsed = np.tile(rng.normal(size=(1, 64)), (256, 1)).astype("float32")
    assert float(collapse_indicator(collapsed)) == pytest.approx(0.0, abs=1e-3)
