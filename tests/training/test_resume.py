"""Resuming after SIGKILL at step granularity, and checkpoint writes that a kill cannot corrupt."""

import csv
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from tensorflow.python.checkpoint import checkpoint_management

from byol_keras.config import load_config
from byol_keras.errors import UsageError
from byol_keras.methods.byol import cosine_tau
from byol_keras.registration import load_model
from byol_keras.training.callbacks import Checkpoints
from byol_keras.training.resume import FitCall, check_config_change, remaining_fit_calls
from tests.helpers.kill import kill_after_first_checkpoint

STEPS_PER_EPOCH, EPOCHS, EVERY, TAU_BASE = 10, 4, 3, 0.99
RUN_ARGS = [
    "model.backbone=tiny",
    "model.width=8",
    "model.projection_dim=16",
    "model.projector_hidden_dim=32",
    "model.predictor_hidden_dim=32",
    f"model.tau_base={TAU_BASE}",
    "data.image_size=16",
    "optimizer.name=adamw",
    "optimizer.lr_scaling=none",
    "optimizer.warmup_epochs=0",
    "train.batch_size=32",
    f"train.epochs={EPOCHS}",
    f"train.steps_per_epoch={STEPS_PER_EPOCH}",
    f"train.checkpoint_every_steps={EVERY}",
    "train.keep_checkpoints=3",
    "train.verbose=0",
    "eval.final_linear_probe=false",
]


def _train_command(run: Path) -> list[str]:
    command = [sys.executable, "-m", "byol_keras", "train", "--output", str(run)]
    for override in RUN_ARGS:
        command += ["--set", override]
    return command


def test_remaining_fit_calls_finish_the_interrupted_epoch_first():
    assert remaining_fit_calls(0, 10, 40) == [FitCall(0, 4, 10)]
    assert remaining_fit_calls(25, 10, 40) == [FitCall(2, 3, 5), FitCall(3, 4, 10)]
    assert remaining_fit_calls(30, 10, 40) == [FitCall(3, 4, 10)]
    assert remaining_fit_calls(39, 10, 40) == [FitCall(3, 4, 1)]
    assert remaining_fit_calls(40, 10, 40) == []


def test_remaining_fit_calls_end_inside_an_epoch_when_the_total_does():
    assert remaining_fit_calls(0, 10, 43) == [FitCall(0, 4, 10), FitCall(4, 5, 3)]
    assert remaining_fit_calls(25, 10, 27) == [FitCall(2, 3, 2)]
    assert remaining_fit_calls(41, 10, 43) == [FitCall(4, 5, 2)]
    assert remaining_fit_calls(45, 10, 43) == []


@pytest.mark.parametrize("steps_per_epoch", [1, 3, 7])
def test_remaining_fit_calls_train_each_batch_once_in_its_epoch(steps_per_epoch):
    """Against a reference: the epoch of every batch from `done` to `total`, in order."""
    for done, total in itertools.product(range(20), range(20)):
        trained = [
            epoch
            for call in remaining_fit_calls(done, steps_per_epoch, total)
            for epoch in range(call.initial_epoch, call.epochs)
            for _ in range(call.steps_per_epoch)
        ]
        assert trained == [batch // steps_per_epoch for batch in range(done, total)]


@pytest.mark.slow
def test_sigkilled_run_resumes_at_its_last_step_and_ends_on_time(tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    killed_at = kill_after_first_checkpoint(_train_command(run), run, env)

    second = subprocess.run(_train_command(run), env=env, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr[-2000:]

    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == EPOCHS * STEPS_PER_EPOCH
    assert summary["resumed_from_step"] >= killed_at > 0
    assert summary["resumed_from_step"] % EVERY == 0

    # The metrics file was appended: one header, and the epochs run to the last one.
    with (run / "metrics.csv").open() as stream:
        rows = list(csv.DictReader(stream))
    assert all(row["epoch"] != "epoch" for row in rows)
    assert [int(row["epoch"]) for row in rows][-1] == EPOCHS - 1
    # τ continued from the restored step counter: the resumed epoch logs the τ of
    # its last step, counted from the start of the run (a reset counter would not).
    resumed = summary["resumed_from_step"]
    epoch = resumed // STEPS_PER_EPOCH
    total = EPOCHS * STEPS_PER_EPOCH
    last_step = (epoch + 1) * STEPS_PER_EPOCH - 1
    expected_tau = float(cosine_tau(last_step, total, TAU_BASE))
    row = [row for row in rows if int(row["epoch"]) == epoch][-1]
    assert float(row["tau"]) == pytest.approx(expected_tau, abs=1e-6)

    model = load_model(run / "model.keras")
    assert int(model.optimizer.iterations.numpy()) == total
    assert int(model.total_steps.numpy()) == total
    fresh = model.target_backbone.get_weights()
    init = keras.models.clone_model(model.online_backbone).get_weights()
    assert any(not np.allclose(a, b) for a, b in zip(fresh, init, strict=True))


def _compiled_tiny(tiny_byol):
    model = tiny_byol(tau_base=0.9, total_steps=10)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    model.optimizer.build(model.trainable_variables)
    return model


def test_kill_between_data_and_index_write_keeps_previous_checkpoint(
    tiny_byol, tmp_path, monkeypatch
):
    model = _compiled_tiny(tiny_byol)
    checkpoints = Checkpoints(model, tmp_path / "ckpt")
    kernel = model.online_backbone.trainable_weights[0]
    model.optimizer._iterations.assign(5)
    good = kernel.numpy()
    checkpoints.save()

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed after the data files, before the index")

    # CheckpointManager writes data files, then records them in the index.
    monkeypatch.setattr(checkpoint_management, "update_checkpoint_state_internal", killed)
    kernel.assign(kernel.numpy() + 1.0)
    model.optimizer._iterations.assign(10)
    with pytest.raises(KeyboardInterrupt):
        checkpoints.save()
    monkeypatch.undo()
    assert (tmp_path / "ckpt" / "ckpt-10.index").exists()  # the half-finished save

    restored = _compiled_tiny(tiny_byol)
    assert Checkpoints(restored, tmp_path / "ckpt").restore() == 5
    np.testing.assert_array_equal(restored.online_backbone.trainable_weights[0].numpy(), good)


@pytest.mark.parametrize(
    ("method", "default"), [("byol", True), ("simsiam", True), ("simclr", False)]
)
def test_the_predictor_spelled_out_as_the_methods_default_resumes_the_same_model(method, default):
    recorded = load_config(None, [f"model.method={method}"]).to_dict()  # model.predictor: null
    spelled_out = load_config(None, [f"model.method={method}", f"model.predictor={default}"])
    assert check_config_change(recorded, spelled_out, allow_changes=False, where="run") == []
    # The other value is another model: a head more or less, refused even with changes allowed.
    other = load_config(None, [f"model.method={method}", f"model.predictor={not default}"])
    with pytest.raises(UsageError, match=f"another model .*model.predictor: {default} -> "):
        check_config_change(recorded, other, allow_changes=True, where="run")


@pytest.mark.parametrize("key", ["detect.epochs=3", "segment.epochs=3", "eval.knn_k=5"])
def test_a_downstream_task_key_changes_nothing_training_learns_and_resumes(key):
    recorded = load_config(None, []).to_dict()
    assert check_config_change(recorded, load_config(None, [key]), False, where="run") == []
