"""Test helper for interrupted runs: start a training command and SIGKILL it mid-run."""

import signal
import subprocess
import time
from pathlib import Path

import tensorflow as tf


def latest_checkpoint_step(checkpoints: Path) -> int:
    """The step of the newest checkpoint in `checkpoints`, 0 when there is none."""
    latest = tf.train.latest_checkpoint(str(checkpoints)) if checkpoints.is_dir() else None
    return int(latest.rsplit("-", 1)[1]) if latest else 0


def kill_after_first_checkpoint(command: list[str], run: Path, env: dict[str, str]) -> int:
    """Run `command` until `run` has a checkpoint, SIGKILL it, and return that step.

    Fails the test if no checkpoint appears within 120 s, if the process died on its
    own, or if it finished (wrote `model.keras`) before the kill landed.
    """
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while latest_checkpoint_step(run / "checkpoints") == 0 and process.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint within 120 s"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, process.stderr.read().decode()[-2000:]
    assert not (run / "model.keras").exists(), "the run finished before it was killed"
    return latest_checkpoint_step(run / "checkpoints")
