"""The segmenter export's class check: what its record holds, by hand-made probabilities."""

import numpy as np
import pytest

from byol_keras.export.segmenter import CLASSES, PROBABILITIES, _classes_check


def test_the_class_check_counts_pixels_and_claims_no_max_abs_diff():
    # Review defect 8: `max_abs_diff` held the number of clearly mismatched pixels.
    probabilities = np.array([[[0.9, 0.1], [0.5, 0.5], [0.2, 0.8]]], np.float32)  # [1, 3, 2]
    reference = {PROBABILITIES: probabilities, CLASSES: np.array([[0, 0, 1]])}
    # Pixel 1 is a tie (either class is right); pixel 2 has a clear arg-max and got class 0.
    check = _classes_check(np.array([[0, 1, 0]]), reference)
    assert "max_abs_diff" not in check
    assert check["pixels"] == 3 and check["differing_pixels"] == 2
    assert check["clear_mismatches"] == 1 and check["passed"] is False
    assert check["margin"] == pytest.approx(2 * 1e-4 * (1 + 0.9))
    assert _classes_check(np.array([[0, 1, 1]]), reference)["passed"] is True
