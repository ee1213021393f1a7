"""The command line: a quiet start, --set with several values, --version and --verbose."""

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from byol_keras import cli

ROOT = Path(__file__).resolve().parents[1]
# Substrings of TensorFlow's C++ log lines (absl prefixes I0000/W0000/E0000) and
# of Keras's warning about fit(shuffle=True) with a dataset.
TENSORFLOW_NOISE = ("oneDNN", "cuInit", "cpu_feature_guard", "E0000", "W0000", "I0000", "absl::")
KERAS_NOISE = ("shuffle=True",)


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None):
    """`python -m byol_keras ARGS` as a user starts it: no TF_CPP_MIN_LOG_LEVEL of ours."""
    environment = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    environment.update(PYTHONPATH=str(ROOT), **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "byol_keras", *args],
        capture_output=True,
        text=True,
        env=environment,
        cwd=cwd,
        timeout=300,
    )


@pytest.mark.slow
def test_train_starts_with_the_projects_own_lines_and_logs_the_current_tau(tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli(
        "train",
        "--set",
        "data.image_size=8",
        "model.width=4",
        "model.projection_dim=8",
        "model.projector_hidden_dim=16",
        "model.predictor_hidden_dim=16",
        "--set",
        "train.epochs=1",
        "train.steps_per_epoch=2",
        "train.batch_size=8",
        "--set",
        "train.verbose=0",
        "--set",
        "eval.final_linear_probe=false",
        "--output",
        str(run_dir),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stderr.splitlines()
    assert lines and lines[0].startswith("INFO byol_keras: training data: digits"), lines[:5]
    noisy = [line for line in lines if any(s in line for s in TENSORFLOW_NOISE + KERAS_NOISE)]
    assert noisy == []

    # Every --set, one per flag or several after one flag, reached the config.
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["data"]["image_size"] == 8 and config["model"]["width"] == 4
    assert config["train"]["steps_per_epoch"] == 2 and config["train"]["batch_size"] == 8
    assert config["eval"]["final_linear_probe"] is False

    # τ of the last of 2 steps (k = 1 of K = 2) from the quickstart's tau_base 0.99, by hand.
    assert config["model"]["tau_base"] == 0.99
    last_tau = 1 - (1 - 0.99) * 0.5
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["final_tau"] == pytest.approx(last_tau, abs=1e-6)
    with open(run_dir / "metrics.csv") as stream:
        rows = list(csv.DictReader(stream))
    assert float(rows[-1]["tau"]) == pytest.approx(last_tau, abs=1e-6)


@pytest.mark.slow
def test_errors_are_one_line_and_verbose_shows_tensorflows_messages(tmp_path):
    missing = str(tmp_path / "missing")
    quiet = run_cli("export", "--run", missing)
    assert quiet.returncode == 2
    assert quiet.stderr.splitlines() == [
        f"byol-keras: error: --run: run directory '{missing}' does not exist"
    ]
    verbose = run_cli("export", "--run", missing, "--verbose")
    assert verbose.returncode == 2
    lines = verbose.stderr.splitlines()
    assert lines[-1] == quiet.stderr.splitlines()[0]
    assert any(s in line for line in lines[:-1] for s in TENSORFLOW_NOISE), lines
    # The user's own TF_CPP_MIN_LOG_LEVEL is theirs to choose as well.
    chosen = run_cli("export", "--run", missing, env={"TF_CPP_MIN_LOG_LEVEL": "0"})
    assert len(chosen.stderr.splitlines()) > 1


def test_set_takes_several_values_after_one_flag_and_repeated_flags():
    parser = cli.build_parser()
    args = parser.parse_args(
        ["train", "--set", "train.epochs=3", "data.image_size=32", "--set", "model.width=8"]
    )
    assert args.overrides == ["train.epochs=3", "data.image_size=32", "model.width=8"]
    assert parser.parse_args(["train"]).overrides == []
    evaluate = parser.parse_args(
        ["evaluate", "--run", "r", "--protocol", "knn", "--set", "eval.knn_k=5", "eval.knn_k=7"]
    )
    assert evaluate.overrides == ["eval.knn_k=5", "eval.knn_k=7"]


def test_version_prints_the_version_in_pyproject(capsys):
    pyproject = (ROOT / "pyproject.toml").read_text()
    expected = re.search(r'^version = "([^"]+)"', pyproject, re.MULTILINE).group(1)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"byol-keras {expected}\n"
    from byol_keras import __version__

    assert __version__ == expected
