"""benchmarks/correctness/lever_parity.py: the fused EMA trains to the same losses, a record."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "correctness" / "lever_parity.py"


@pytest.mark.slow
def test_fused_ema_gives_the_losses_of_the_elementwise_update(tmp_path):
    record = tmp_path / "parity.json"
    # Three steps: over twenty, training amplifies any rounding change past 1e-4
    # on this tiny network (the script's one-ulp control shows 2e-3).
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "fused-ema", "--steps", "3", "--record", str(record)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    figures = json.loads(record.read_text())["figures"]
    assert figures["steps"] == ["0", "1", "2"] and figures["same"] is True
    assert figures["off"][0] == figures["on"][0]  # the first step's loss precedes any EMA
    assert figures["worst_relative"] <= 1e-4
