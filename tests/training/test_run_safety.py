"""Run directories: reruns with another config, the finished mark, the lock, signals, file modes."""

import csv
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from byol_keras.cli import main
from byol_keras.errors import UsageError
from byol_keras.methods.byol import cosine_tau
from byol_keras.registration import load_model
from byol_keras.runs import atomic_write_text
from byol_keras.training.interrupt import StopOnSignal
from byol_keras.training.run_lock import run_lock
from tests.helpers.runs import make_run

TAU_BASE = 0.99
TINY = [
    "model.width=4",
    "model.projection_dim=8",
    "model.projector_hidden_dim=16",
    "model.predictor_hidden_dim=16",
    f"model.tau_base={TAU_BASE}",
    "data.image_size=8",
    "optimizer.warmup_epochs=0",
    "train.batch_size=32",
    "train.keep_checkpoints=5",
    "train.verbose=0",
    "eval.final_linear_probe=false",
]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def _train(run: Path, *overrides: str, flags=()) -> list[str]:
    """`train` arguments: the quickstart made tiny, then `overrides` (later ones win)."""
    args = ["train", "--output", str(run), *flags]
    for override in (*TINY, *overrides):
        args += ["--set", override]
    return args


def _one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("byol-keras: error: "), lines[0]
    return lines[0]


def _snapshot(run: Path) -> dict:
    return {name: (run / name).read_bytes() for name in ("config.yaml", "summary.json")}


def _latest_step(checkpoints: Path) -> int:
    latest = tf.train.latest_checkpoint(str(checkpoints)) if checkpoints.is_dir() else None
    return int(latest.rsplit("-", 1)[1]) if latest else 0


def _metrics(run: Path) -> list[dict]:
    with (run / "metrics.csv").open() as stream:
        return list(csv.DictReader(stream))


def _tau(step: int, total: int) -> float:
    """τ of the update at optimizer step `step` of `total`: what the metrics log after it."""
    return float(cosine_tau(step, total, TAU_BASE))


@pytest.fixture(scope="module")
def finished_once(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("finished") / "run"
    assert main(_train(run, "train.epochs=1", "train.steps_per_epoch=4")) == 0
    return run


@pytest.fixture
def finished(finished_once, tmp_path) -> Path:
    """A finished run of 1 epoch of 4 steps, checkpointed at the epoch's end; a copy per test."""
    return Path(shutil.copytree(finished_once, tmp_path / "run"))


def test_a_bad_rerun_writes_nothing(finished, tmp_path, capsys):
    before = _snapshot(finished)
    missing = f"data.source=folder:{tmp_path / 'missing'}"
    assert main(_train(finished, "train.epochs=1", "train.steps_per_epoch=4", missing)) == 2
    assert "data.source" in _one_error_line(capsys)
    assert _snapshot(finished) == before  # the old config and the finished mark survive
    assert json.loads(before["summary.json"])["finished"] is True

    fresh = tmp_path / "fresh"
    assert main(_train(fresh, missing)) == 2
    assert not fresh.exists()


def test_a_changed_config_is_refused_naming_the_keys(finished, capsys):
    before = _snapshot(finished)
    changed = ("train.epochs=1", "train.steps_per_epoch=4", "optimizer.base_lr=0.001")
    # train.verbose only changes what is printed: it is not named.
    assert main(_train(finished, *changed, "train.verbose=2")) == 2
    error = _one_error_line(capsys)
    assert "optimizer.base_lr: 0.002 -> 0.001" in error and "--resume-with-changes" in error
    assert "train.verbose" not in error and "train.epochs" not in error
    assert _snapshot(finished) == before and not (finished / ".lock").exists()

    # A checkpoint of another shape is refused even with the option.
    structural = (*changed, "data.image_size=16", "model.width=8")
    assert main(_train(finished, *structural, flags=["--resume-with-changes"])) == 2
    error = _one_error_line(capsys)
    assert "data.image_size: 8 -> 16" in error and "model.width: 4 -> 8" in error
    assert "even with --resume-with-changes" in error
    assert _snapshot(finished) == before

    # Without a recorded config to compare with, restoring itself finds the mismatch.
    (finished / "config.yaml").unlink()
    assert main(_train(finished, *changed, "model.width=8")) == 2
    assert "no readable config.yaml" in _one_error_line(capsys)
    assert main(_train(finished, *changed, "model.width=8", flags=["--resume-with-changes"])) == 2
    assert "does not fit this model" in _one_error_line(capsys)


def test_results_of_the_old_weights_are_set_aside_when_training_changes_them(finished, caplog):
    # What evaluate and visualize left after the first training, at step 4.
    (finished / "eval").mkdir()
    (finished / "eval" / "knn.json").write_text('{"top1": 0.5}')
    (finished / "pictures").mkdir()
    (finished / "pictures" / "tsne.png").write_bytes(b"png")
    same = ("train.epochs=1", "train.steps_per_epoch=4")
    assert main(_train(finished, *same)) == 0  # no step left: the same weights
    assert (finished / "eval" / "knn.json").is_file() and not (finished / "superseded").exists()

    more = ("train.epochs=2", "train.steps_per_epoch=4")
    with caplog.at_level(logging.WARNING, logger="byol_keras"):
        assert main(_train(finished, *more, flags=["--resume-with-changes"])) == 0
    assert not (finished / "eval").exists() and not (finished / "pictures").exists()
    old = finished / "superseded" / "step-4"
    assert (old / "eval" / "knn.json").read_text() == '{"top1": 0.5}'
    assert (old / "pictures" / "tsne.png").read_bytes() == b"png"
    assert any(str(old) in record.getMessage() for record in caplog.records)
    assert json.loads((finished / "summary.json").read_text())["steps"] == 8


@pytest.mark.slow
def test_more_epochs_with_the_option_extend_both_schedules(finished, capsys):
    more = ("train.epochs=3", "train.steps_per_epoch=4")
    assert main(_train(finished, *more)) == 2
    assert "train.epochs: 1 -> 3" in _one_error_line(capsys)
    assert main(_train(finished, *more, flags=["--resume-with-changes"])) == 0

    summary = json.loads((finished / "summary.json").read_text())
    assert summary["finished"] is True
    assert summary["steps"] == 12 and summary["resumed_from_step"] == 4
    rows = _metrics(finished)
    assert [int(row["epoch"]) for row in rows] == [0, 1, 2]
    # The logged τ is that of each epoch's last step, on the schedule over the new 12
    # steps, not the 4 of the checkpoint (after which τ would stay 1).
    assert float(rows[0]["tau"]) == pytest.approx(_tau(3, 4), abs=1e-6)
    for epoch in (1, 2):
        expected = _tau(4 * epoch + 3, 12)
        assert float(rows[epoch]["tau"]) == pytest.approx(expected, abs=1e-6)
        assert expected < 1.0
    model = load_model(finished / "model.keras")
    assert int(model.total_steps.numpy()) == 12
    assert model.optimizer.get_config()["learning_rate"]["config"]["total_steps"] == 12


@pytest.mark.slow
def test_a_lower_learning_rate_after_divergence_resumes_with_the_option(tmp_path, capsys):
    sgd = ("optimizer.name=sgd", "optimizer.lr_scaling=none", "train.steps_per_epoch=4")
    explode = (*sgd, "train.epochs=2", "optimizer.base_lr=1.0e+30")
    run = tmp_path / "run"
    assert main(_train(run, *sgd, "train.epochs=1", "optimizer.base_lr=0.05")) == 0
    assert main(_train(run, *explode, flags=["--resume-with-changes"])) == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "training diverged" in error and "--resume-with-changes" in error
    assert not (run / "summary.json").exists()  # no longer a finished run
    assert _latest_step(run / "checkpoints") == 4  # the diverged epoch left no checkpoint

    lower = (*sgd, "train.epochs=2", "optimizer.base_lr=0.05")
    assert main(_train(run, *lower)) == 2
    assert "optimizer.base_lr" in _one_error_line(capsys)
    assert main(_train(run, *lower, flags=["--resume-with-changes"])) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 8 and summary["resumed_from_step"] == 4
    assert np.isfinite(summary["final_loss"])


@pytest.mark.parametrize(
    "damage",
    ["no summary", "corrupt summary", "summary without mark", "no backbone", "no config"],
)
def test_evaluate_and_export_refuse_an_unfinished_or_damaged_run(tmp_path, capsys, damage):
    run = make_run(tmp_path / "run")
    if damage == "no summary":
        run.summary_path.unlink()
    elif damage == "corrupt summary":
        run.summary_path.write_text('{"finished": tr')
    elif damage == "summary without mark":
        run.summary_path.write_text(json.dumps({"epochs": 1, "steps": 10}))
    elif damage == "no backbone":
        run.backbone_path.unlink()
    else:
        run.config_path.unlink()
    for command in (["evaluate", "--protocol", "knn"], ["export", "--format", "saved_model"]):
        assert main([*command, "--run", str(run.root)]) == 2
        assert _one_error_line(capsys).startswith("byol-keras: error: --run:")
    assert not (run.root / "eval").exists() and not (run.root / "export").exists()


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_writes_get_the_mode_a_plain_write_gets(tmp_path, umask):
    previous = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "atomic.txt", "x")
        (tmp_path / "plain.txt").write_text("x")
        existing = tmp_path / "existing.txt"
        existing.write_text("old")
        existing.chmod(0o640)
        atomic_write_text(existing, "new")
    finally:
        os.umask(previous)
    mode = (tmp_path / "atomic.txt").stat().st_mode & 0o777
    assert mode == (tmp_path / "plain.txt").stat().st_mode & 0o777 == 0o666 & ~umask
    assert existing.stat().st_mode & 0o777 == 0o640 and existing.read_text() == "new"


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs Linux's /proc")
def test_a_stale_lock_is_taken_over_and_a_live_one_refuses(tmp_path, caplog):
    lock = tmp_path / ".lock"
    parent = os.getppid()  # alive, and not this process
    started = int(Path(f"/proc/{parent}/stat").read_text().rsplit(")", 1)[1].split()[19])
    holder = {"pid": parent, "host": socket.gethostname(), "started": started}
    lock.write_text(json.dumps(holder))
    refused = pytest.raises(UsageError, match=f"in use by another training run \\(pid {parent} ")
    with refused, run_lock(lock):
        pass
    assert json.loads(lock.read_text()) == holder  # a refused process leaves it alone

    # A live pid with another start time is a recycled pid; a dead pid, a killed holder.
    gone = subprocess.Popen(["true"])
    gone.wait()
    for stale in ({**holder, "started": started - 1}, {**holder, "pid": gone.pid}):
        lock.write_text(json.dumps(stale))
        with caplog.at_level(logging.WARNING, logger="byol_keras"), run_lock(lock):
            assert json.loads(lock.read_text())["pid"] == os.getpid()
        assert f"stale lock {lock} of pid {stale['pid']}" in caplog.text
        assert not lock.exists()  # released on exit

    with pytest.raises(RuntimeError), run_lock(lock):
        raise RuntimeError("training failed")
    assert not lock.exists()  # released on an exception too


# Two trainers that find the same stale lock; the delay sits between reading it and removing it.
CONTENDER = """
import sys, time
from pathlib import Path
from byol_keras.errors import UsageError
from byol_keras.training import run_lock as module

lock, start, name = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
alive = module._alive
module._alive = lambda holder: time.sleep(1.0) or alive(holder)
(start / name).touch()
while len(list(start.iterdir())) < 2:  # both contenders start together
    time.sleep(0.01)
try:
    with module.run_lock(lock):
        print("held", flush=True)
        time.sleep(3.0)
except UsageError as error:
    print(error)
"""


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs Linux's /proc")
def test_two_trainers_taking_over_one_stale_lock_leave_one_holder(tmp_path):
    lock, start = tmp_path / ".lock", tmp_path / "start"
    start.mkdir()
    gone = subprocess.Popen(["true"])
    gone.wait()
    lock.write_text(json.dumps({"pid": gone.pid, "host": socket.gethostname(), "started": 1}))
    contenders = [
        subprocess.Popen(
            [sys.executable, "-c", CONTENDER, str(lock), str(start), name],
            stdout=subprocess.PIPE,
            text=True,
        )
        for name in ("a", "b")
    ]
    outcomes = [process.communicate(timeout=60)[0].strip() for process in contenders]
    assert outcomes.count("held") == 1, outcomes
    refusal = f"--output: '{tmp_path}' is in use by another training run"
    assert [line for line in outcomes if line != "held"][0].startswith(refusal), outcomes
    assert not lock.exists()


def test_signal_handlers_are_installed_only_inside_the_block():
    calls = []
    previous = signal.signal(signal.SIGTERM, lambda *args: calls.append(args))
    try:
        sentinel = signal.getsignal(signal.SIGTERM)
        with StopOnSignal(checkpoints=None) as stop:
            assert signal.getsignal(signal.SIGTERM) != sentinel
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.1)  # Python runs the handler between bytecodes
            assert stop.received == signal.SIGTERM and calls == []
        assert signal.getsignal(signal.SIGTERM) == sentinel
    finally:
        signal.signal(signal.SIGTERM, previous)


def _cli(run: Path, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "byol_keras", *_train(run, *overrides)]


def _start_and_wait_for_checkpoint(run: Path, *overrides: str) -> subprocess.Popen:
    process = subprocess.Popen(
        _cli(run, *overrides),
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        # As from a terminal: a suite run in the background (`cmd &`) inherits an ignored
        # SIGINT, which the run rightly keeps ignoring, and Ctrl-C would then do nothing.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 120
    while _latest_step(run / "checkpoints") == 0:
        assert process.poll() is None, process.stderr.read()[-2000:]
        assert time.monotonic() < deadline, "no checkpoint within 120 s"
        time.sleep(0.01)
    return process


def _interrupted_step(process: subprocess.Popen, code: int) -> int:
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == code, stderr[-2000:]
    line = stderr.strip().splitlines()[-1]
    prefix, suffix = "byol-keras: interrupted at step ", "; checkpoint saved, rerun the same "
    assert line.startswith(prefix) and line.endswith(suffix + "command to resume"), line
    return int(line[len(prefix) :].split(";")[0])


@pytest.mark.slow
def test_ctrl_c_saves_at_the_next_step_and_the_rerun_ends_on_schedule(tmp_path):
    run, steps, epochs = tmp_path / "run", 40, 3
    overrides = (f"train.epochs={epochs}", f"train.steps_per_epoch={steps}")
    process = _start_and_wait_for_checkpoint(run, *overrides)
    process.send_signal(signal.SIGINT)
    step = _interrupted_step(process, 130)
    assert steps < step < epochs * steps  # after the first epoch-end save, before the end
    assert _latest_step(run / "checkpoints") == step
    assert not (run / "summary.json").exists() and not (run / ".lock").exists()

    rerun = subprocess.run(_cli(run, *overrides), env=ENV, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == epochs * steps and summary["resumed_from_step"] == step
    # The resumed epoch ends on the schedule: its last step logs that step's τ.
    epoch = step // steps
    row = [row for row in _metrics(run) if int(row["epoch"]) == epoch][-1]
    last = (epoch + 1) * steps - 1
    assert float(row["tau"]) == pytest.approx(_tau(last, epochs * steps), abs=1e-6)


@pytest.mark.slow
def test_sigterm_saves_and_exits_143_and_a_second_train_is_refused_meanwhile(tmp_path, capsys):
    run, steps = tmp_path / "run", 40
    overrides = ("train.epochs=50", f"train.steps_per_epoch={steps}")
    process = _start_and_wait_for_checkpoint(run, *overrides)
    try:
        assert main(_train(run, *overrides)) == 2
        error = _one_error_line(capsys)
        assert f"in use by another training run (pid {process.pid} " in error
        assert process.poll() is None, "the first run did not keep on training"
        process.send_signal(signal.SIGTERM)
        step = _interrupted_step(process, 143)
    finally:
        process.kill()
    assert step > steps and _latest_step(run / "checkpoints") == step
    assert not (run / ".lock").exists()
