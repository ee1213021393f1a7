"""The NaN/Inf loss guard and the collapse warning."""

import logging

import keras
import numpy as np
import pytest
import tensorflow as tf

from byol_keras.cli import main
from byol_keras.errors import TrainingDiverged
from byol_keras.nn.batchnorm import batchnorm_layers, set_fused
from byol_keras.training.callbacks import Checkpoints
from byol_keras.training.guards import CollapseWarning, StopOnNonFiniteLoss
from tests.helpers.views import view_pair


def _checkpoint_weights_finite(path: str) -> bool:
    reader = tf.train.load_checkpoint(path)
    names = [
        name for name, dtype in reader.get_variable_to_dtype_map().items() if dtype.is_floating
    ]
    return bool(names) and all(np.isfinite(reader.get_tensor(name)).all() for name in names)


# With oneDNN (TF_ENABLE_ONEDNN_OPTS=1, the default on some CPUs) the fused BatchNorm + ReLU
# maps NaN activations to 0 and the loss itself stays finite; without it, the NaN reaches the
# loss. The guard must stop at the same step either way: run this file under both settings.
@pytest.mark.parametrize("fused", [False, True])
def test_nan_at_step_4_stops_training_and_keeps_step_3_as_latest(tiny_byol, tmp_path, fused):
    view1, view2 = view_pair(batch=24)
    view1[12:16] = np.nan  # batch 4 of 6 (4 images each)
    data = tf.data.Dataset.from_tensor_slices((view1, view2)).batch(4)
    model = set_fused(tiny_byol(tau_base=0.9, total_steps=10), fused)
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    checkpoints = Checkpoints(model, tmp_path / "ckpt", every_steps=1, keep=10)
    with pytest.raises(TrainingDiverged, match=r"loss is nan at step 4 \(epoch 1\)") as caught:
        model.fit(data, epochs=1, callbacks=[StopOnNonFiniteLoss(), checkpoints], verbose=0)
    assert "\n" not in str(caught.value)
    assert checkpoints.latest.endswith("ckpt-3")
    assert _checkpoint_weights_finite(checkpoints.latest)


@pytest.mark.parametrize(
    ("method", "network", "statistic"),
    [("byol", "online_backbone", "moving_mean"), ("simclr", "online_projector", "moving_variance")],
)
def test_a_step_that_leaves_a_batchnorm_statistic_not_finite_stops_training(
    tiny_byol, method, network, statistic
):
    # Whatever the kernel does to the activations: the images are finite, the loss of the
    # step is finite, only one BatchNorm's moving statistics are NaN.
    model = tiny_byol(method=method)
    norm = next(batchnorm_layers(getattr(model, network)))
    values = getattr(norm, statistic).numpy()
    values[0] = np.nan
    getattr(norm, statistic).assign(values)
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    data = tf.data.Dataset.from_tensor_slices(view_pair(batch=8)).batch(8)
    with pytest.raises(TrainingDiverged, match=r"loss is nan at step 1 \(epoch 1\)"):
        model.fit(data, epochs=1, callbacks=[StopOnNonFiniteLoss()], verbose=0)


def test_cli_reports_divergence_in_one_line_and_exits_1(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "--output", str(run)]
    for override in (
        "model.width=4",
        "model.projection_dim=8",
        "model.projector_hidden_dim=16",
        "model.predictor_hidden_dim=16",
        "optimizer.name=sgd",
        "optimizer.base_lr=1.0e+30",
        "optimizer.lr_scaling=none",
        "optimizer.warmup_epochs=0",
        "train.batch_size=32",
        "train.epochs=1",
        "train.steps_per_epoch=8",
        "train.checkpoint_every_steps=1",
        "train.keep_checkpoints=10",
        "train.verbose=0",
        "eval.final_linear_probe=false",
    ):
        args += ["--set", override]
    assert main(args) == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("byol-keras: error: training diverged:"), error
    step = int(error.split(" at step ")[1].split()[0].rstrip(";"))
    assert 1 <= step <= 8
    saved = tf.train.get_checkpoint_state(str(run / "checkpoints"))
    for path in saved.all_model_checkpoint_paths if saved else []:
        assert int(path.rsplit("-", 1)[1]) < step, path
        assert _checkpoint_weights_finite(path), path
    assert not (run / "model.keras").exists()


def _feed(callback, collapse_values, first_epoch=0):
    for epoch, value in enumerate(collapse_values, start=first_epoch):
        callback.on_epoch_end(epoch, {"loss": 0.5, "collapse": value})


def test_collapse_warning_after_patience_low_epochs_names_causes(caplog):
    watch = CollapseWarning(threshold=0.05, patience=3)
    with caplog.at_level(logging.WARNING, logger="byol_keras"):
        _feed(watch, [0.9, 0.04, 0.03, 0.2, 0.01, 0.02])  # streaks of 2: no warning yet
        assert watch.warnings == []
        # The streak goes on to 6 low epochs: one warning, at its third (epoch 7).
        _feed(watch, [0.01, 0.01, 0.01, 0.01], first_epoch=6)
    assert len(watch.warnings) == 1
    message = watch.warnings[0]
    assert "below 0.05 for 3 epochs" in message and "after epoch 7" in message
    for cause in ("learning rate", "τ too low", "predictor", "augmentation", "batch too small"):
        assert cause in message, cause
    assert caplog.records[-1].getMessage() == message


def test_collapse_warning_is_silent_when_healthy(caplog):
    watch = CollapseWarning(threshold=0.05, patience=2)
    with caplog.at_level(logging.WARNING, logger="byol_keras"):
        _feed(watch, [1.0, 0.9, 0.06, 0.05, 0.8, 0.04, 0.5])
    assert watch.warnings == []
    assert caplog.records == []
