"""The command line: a quiet start, --set with several values, --version, --verbose, and
one-line errors from a read-only or full disk."""

import csv
import errno
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from byol_keras import cli
from tests.helpers.disks import run_on_small_disk, run_read_only
from tests.helpers.kill import latest_checkpoint_step
from tests.helpers.runs import make_run

ROOT = Path(__file__).resolve().parents[1]
# Substrings of TensorFlow's C++ log lines (absl prefixes I0000/W0000/E0000) and
# of Keras's warning about fit(shuffle=True) with a dataset.
TENSORFLOW_NOISE = ("oneDNN", "cuInit", "cpu_feature_guard", "E0000", "W0000", "I0000", "absl::")
KERAS_NOISE = ("shuffle=True",)


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None):
    """`python -m byol_keras ARGS` as a user starts it: no TF_CPP_MIN_LOG_LEVEL of ours."""
    return subprocess.run(
        cli_command(*args),
        capture_output=True,
        text=True,
        env={**cli_environment(), **(env or {})},
        cwd=cwd,
        timeout=300,
    )


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "byol_keras", *args]


def cli_environment() -> dict:
    environment = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return {**environment, "PYTHONPATH": str(ROOT)}


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


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full, a disk always full")
@pytest.mark.parametrize("writer", ["tensorflow", "python", "read-only"])
def test_a_write_the_disk_refuses_is_one_line_naming_the_path_with_exit_1(
    writer, tmp_path, monkeypatch, capsys
):
    """Linux's /dev/full refuses every write with ENOSPC, to TensorFlow and Python alike.

    The read-only case raises the OSError that `open` raises on a read-only file
    system (EROFS), which root cannot get from permission bits; the slow tests
    below meet real read-only and full file systems.
    """
    import tensorflow as tf

    output, manifest = tmp_path / "out", tmp_path / "out" / "manifest.json"

    def export(args):
        if writer == "tensorflow":  # the error a checkpoint's SaveV2 raises on a full disk
            tf.io.write_file("/dev/full", "checkpoint")
        elif writer == "python":  # a failed write() names no file
            Path("/dev/full").write_text("summary")
        else:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(manifest))

    monkeypatch.setitem(cli.HANDLERS, "export", export)
    code = cli.main(["export", "--run", str(tmp_path / "run"), "--output", str(output)])
    expected = {
        "tensorflow": "cannot write '/dev/full': No space left on device",
        "python": f"cannot write to '{output}': No space left on device",
        "read-only": f"cannot write '{manifest}': Read-only file system",
    }
    assert code == 1
    assert capsys.readouterr().err.splitlines() == [f"byol-keras: error: {expected[writer]}"]


def test_errors_other_than_a_refused_write_keep_their_traceback(tmp_path, monkeypatch):
    import tensorflow as tf

    out_of_memory = tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor")
    missing = FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(tmp_path / "x"))
    for error in (out_of_memory, missing):
        monkeypatch.setitem(cli.HANDLERS, "export", lambda args, error=error: _raise(error))
        with pytest.raises(type(error)):
            cli.main(["export", "--run", str(tmp_path)])


def _raise(error: BaseException):
    raise error


TINY = [
    "data.image_size=8",
    "model.width=4",
    "model.projection_dim=8",
    "model.projector_hidden_dim=16",
    "model.predictor_hidden_dim=16",
    "train.epochs=1",
    "train.steps_per_epoch=2",
    "train.batch_size=8",
    "train.verbose=0",
    "eval.final_linear_probe=false",
]


@pytest.mark.slow
def test_a_read_only_directory_is_refused_in_one_line_before_the_work(tmp_path):
    folder = tmp_path / "read_only"
    run = make_run(folder / "run")
    new_run = folder / "new_run"
    cases = [
        (["train", "--set", *TINY, "--output", str(new_run)], "--output", new_run),
        (["evaluate", "--run", str(run.root), "--protocol", "linear"], "--run", run.eval_dir),
        (["export", "--run", str(run.root)], "--output", run.root / "export"),
    ]
    for arguments, option, refused in cases:
        result = run_read_only(folder, cli_command(*arguments), cli_environment())
        assert result.returncode == 2, result.stderr[-3000:]
        error = [line for line in result.stderr.splitlines() if not line.startswith("INFO ")]
        message = f"{option}: cannot write to '{refused}' (Read-only file system)"
        assert error == [f"byol-keras: error: {message}"]
    assert sorted(p.name for p in folder.iterdir()) == ["run"]


@pytest.mark.slow
def test_a_full_disk_during_train_is_one_line_and_its_checkpoint_resumes(tmp_path):
    disk, kept = tmp_path / "disk", tmp_path / "kept"
    disk.mkdir()
    # 256 KiB hold the config, logs and the step-2 checkpoint (about 100 KiB), not model.keras
    # (about 280 KiB).
    train = cli_command("train", "--set", *TINY, "--output")
    result = run_on_small_disk(disk, 256, [*train, str(disk / "run")], kept, cli_environment())
    assert result.returncode == 1, result.stderr[-3000:]
    error = [line for line in result.stderr.splitlines() if not line.startswith("INFO ")]
    message = f"cannot write to '{disk / 'run'}': No space left on device"
    assert error == [f"byol-keras: error: {message}"]
    run = kept / "run"
    assert latest_checkpoint_step(run / "checkpoints") == 2
    assert not (run / "summary.json").exists() and not (run / ".lock").exists()

    # With room again, the same command resumes from that checkpoint and finishes.
    rerun = run_cli("train", "--set", *TINY, "--output", str(run))
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["finished"] and summary["resumed_from_step"] == 2 and summary["steps"] == 2
