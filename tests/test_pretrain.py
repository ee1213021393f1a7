"""With train.seed and train.deterministic, two CPU runs give identical per-epoch losses."""

import csv
import os
import subprocess
import sys

import pytest

# Two training processes: out of the quick `pytest -m "not slow"` loop.
pytestmark = pytest.mark.slow

OVERRIDES = [
    "model.width=4",
    "model.projection_dim=8",
    "model.projector_hidden_dim=16",
    "model.predictor_hidden_dim=16",
    "train.batch_size=32",
    "train.epochs=2",
    "train.steps_per_epoch=3",
    "train.seed=7",
    "train.deterministic=true",
    "train.verbose=0",
    "eval.final_linear_probe=false",
]


def test_two_seeded_deterministic_runs_have_identical_losses(tmp_path):
    # Op determinism is process-wide and cannot be turned off again, so each
    # run gets its own process; both run at once to halve the wall time.
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    runs = [tmp_path / "a", tmp_path / "b"]
    processes = []
    for run in runs:
        command = [sys.executable, "-m", "byol_keras", "train", "--output", str(run)]
        for override in OVERRIDES:
            command += ["--set", override]
        processes.append(subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True))
    for process in processes:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr[-2000:]

    def losses(run):
        with (run / "metrics.csv").open() as stream:
            return [row["loss"] for row in csv.DictReader(stream)]

    first, second = losses(runs[0]), losses(runs[1])
    assert len(first) == 2
    assert first == second  # compared as the CSV's text: bit-for-bit, no tolerance
