"""BYOL's ablation switches and the other method classes: NT-Xent, no predictor, fixed τ,
SimSiam and SimCLR, each through fit, save/load, kill-resume, distribution and export."""

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from byol_keras.cli import main
from byol_keras.config import load_config
from byol_keras.errors import UsageError
from byol_keras.methods.base import SelfSupervisedModel
from byol_keras.nn.losses import nt_xent_loss
from byol_keras.registration import load_model
from tests.helpers.kill import kill_after_first_checkpoint

SIZE = 16
ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)}
# The digits quickstart (the default config), made tiny; checkpoints every 3 steps to kill between.
STEPS, EPOCHS, EVERY = 8, 4, 3
TINY = [
    "model.width=8",
    "model.projection_dim=16",
    "model.projector_hidden_dim=32",
    "model.predictor_hidden_dim=32",
    "optimizer.warmup_epochs=0",
    "train.batch_size=32",
    f"train.epochs={EPOCHS}",
    f"train.steps_per_epoch={STEPS}",
    f"train.checkpoint_every_steps={EVERY}",
    "train.keep_checkpoints=3",
    "train.verbose=0",
    "eval.final_linear_probe=false",
]
# byol with its defaults is covered by test_resume, test_export and test_run_safety.
METHODS = {
    "simclr": ["model.method=simclr"],
    "simsiam": ["model.method=simsiam"],
    "byol_no_predictor": ["model.predictor=false"],
}


def nt_xent_reference(z1: np.ndarray, z2: np.ndarray, temperature: float) -> float:
    """NT-Xent written out anchor by anchor, as in the SimCLR paper's algorithm 1."""
    views = np.concatenate([z1, z2]).astype("float64")
    views /= np.linalg.norm(views, axis=1, keepdims=True)
    n = len(z1)
    losses = []
    for anchor in range(2 * n):
        positive = (anchor + n) % (2 * n)
        similarity = views @ views[anchor] / temperature
        others = [k for k in range(2 * n) if k != anchor]
        losses.append(np.log(np.exp(similarity[others]).sum()) - similarity[positive])
    return float(np.mean(losses))


@pytest.mark.parametrize("temperature", [0.1, 0.5, 1.0])
def test_nt_xent_equals_a_numpy_reference(temperature):
    rng = np.random.default_rng(7)
    z1 = rng.normal(size=(6, 5)).astype("float32")
    z2 = (z1 + rng.normal(scale=0.5, size=z1.shape)).astype("float32")
    loss = float(nt_xent_loss(z1, z2, temperature))
    assert loss == pytest.approx(nt_xent_reference(z1, z2, temperature), rel=1e-5)
    # Swapping the views swaps the anchors' order only; the mean stays.
    assert float(nt_xent_loss(z2, z1, temperature)) == pytest.approx(loss, rel=1e-6)
    # All views alike: every candidate is as likely as the positive, log(2N - 1).
    same = np.ones((6, 5), "float32")
    assert float(nt_xent_loss(same, same, temperature)) == pytest.approx(math.log(11), rel=1e-5)


def view_pairs(batch=8, steps=3, seed=0):
    rng = np.random.default_rng(seed)
    view1 = rng.uniform(size=(batch * steps, SIZE, SIZE, 3)).astype("float32")
    view2 = np.clip(view1 + rng.normal(scale=0.1, size=view1.shape), 0, 1).astype("float32")
    return tf.data.Dataset.from_tensor_slices((view1, view2)).batch(batch)


def ema_pairs(model):
    """(online, target) for the weights the optimizer trains, matched by position."""
    online = model.online_backbone.weights + model.online_projector.weights
    target = model.target_backbone.weights + model.target_projector.weights
    return [(o, t) for o, t in zip(online, target, strict=True) if o.trainable]


def test_without_predictor_the_model_has_no_predictor_variables(tiny_byol):
    model = tiny_byol(use_predictor=False, total_steps=4)
    assert model.predictor is None
    assert not [v.path for v in model.weights if "predictor" in v.path]
    online = model.online_backbone.trainable_weights + model.online_projector.trainable_weights
    assert {id(v) for v in model.trainable_variables} == {id(v) for v in online}
    with_predictor = tiny_byol(total_steps=4)
    assert len(with_predictor.trainable_variables) > len(model.trainable_variables)


class _AfterEveryBatch(keras.callbacks.Callback):
    def __init__(self, check):
        super().__init__()
        self.check, self.batches = check, 0

    def on_train_batch_end(self, batch, logs=None):
        self.check(self.model, logs)
        self.batches += 1


def test_constant_tau_one_keeps_the_target_at_its_initialisation(tiny_byol):
    model = tiny_byol(tau_base=1.0, tau_schedule="constant")
    model.compile(optimizer=keras.optimizers.SGD(0.5))
    initial = [t.numpy() for _, t in ema_pairs(model)]
    online_initial = [o.numpy() for o, _ in ema_pairs(model)]

    def unchanged(model, logs):
        assert logs["tau"] == pytest.approx(1.0)
        for (_, target), before in zip(ema_pairs(model), initial, strict=True):
            np.testing.assert_array_equal(target.numpy(), before)

    watch = _AfterEveryBatch(unchanged)
    model.fit(view_pairs(), epochs=2, verbose=0, callbacks=[watch])
    assert watch.batches == 6
    assert any(
        not np.allclose(o.numpy(), b)
        for (o, _), b in zip(ema_pairs(model), online_initial, strict=True)
    ), "the online network did not move, so the check proves nothing"


def test_constant_tau_zero_makes_the_target_the_online_network_after_every_step(tiny_byol):
    model = tiny_byol(tau_base=0.0, tau_schedule="constant")
    model.compile(optimizer=keras.optimizers.SGD(0.5))
    rng = np.random.default_rng(1)
    for _, target in ema_pairs(model):  # start apart, so that equality is the EMA's doing
        target.assign(target.numpy() + rng.normal(scale=0.1, size=target.shape))

    def equal(model, logs):
        assert logs["tau"] == pytest.approx(0.0)
        for online, target in ema_pairs(model):
            np.testing.assert_array_equal(target.numpy(), online.numpy())

    watch = _AfterEveryBatch(equal)
    model.fit(view_pairs(), epochs=2, verbose=0, callbacks=[watch])
    assert watch.batches == 6


def test_constant_tau_logs_tau_base_where_cosine_would_rise(tiny_byol):
    model = tiny_byol(tau_base=0.9, tau_schedule="constant")
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    history = model.fit(view_pairs(), epochs=2, verbose=0)
    assert history.history["tau"] == pytest.approx([0.9, 0.9])
    cosine = tiny_byol(tau_base=0.9)
    cosine.compile(optimizer=keras.optimizers.SGD(0.1))
    assert cosine.fit(view_pairs(), epochs=2, verbose=0).history["tau"][-1] > 0.95


@pytest.mark.parametrize("method", ["simsiam", "simclr"])
def test_simsiam_and_simclr_hold_no_target_variables(tiny_byol, method):
    model = tiny_byol(method=method)
    assert not hasattr(model, "target_backbone") and not hasattr(model, "target_projector")
    heads = [model.online_projector] + ([model.predictor] if model.predictor else [])
    online = {id(v) for net in [model.online_backbone, *heads] for v in net.weights}
    # Every weight is the online network's, but the step counter of the schedules.
    assert {id(v) for v in model.weights} - online == {id(model.total_steps)}
    assert (model.predictor is not None) == (method == "simsiam")
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    history = model.fit(view_pairs(), epochs=1, verbose=0)
    assert set(history.history) == {"loss", "collapse"}  # no τ without a target
    assert np.isfinite(history.history["collapse"][0])


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kwargs", "predictor", "settings"),
    [
        ({"method": "simclr", "temperature": 0.3}, False, {"temperature": 0.3}),
        ({"method": "simclr", "temperature": 0.3, "use_predictor": True}, True, {}),
        ({"method": "simsiam"}, True, {}),
        (
            {"use_predictor": False, "tau_schedule": "constant", "tau_base": 0.5},
            False,
            {"tau_schedule": "constant", "tau_base": 0.5},
        ),
    ],
)
def test_save_and_load_keep_the_method_and_its_switches(
    tiny_byol, tmp_path, kwargs, predictor, settings
):
    model = tiny_byol(**kwargs)
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
    model.fit(view_pairs(steps=1), epochs=1, verbose=0)
    model.save(tmp_path / "model.keras")
    restored = load_model(tmp_path / "model.keras")
    assert isinstance(restored, SelfSupervisedModel) and type(restored) is type(model)
    assert type(restored).method == kwargs.get("method", "byol")
    assert (restored.predictor is not None) == predictor
    for name, value in settings.items():
        assert getattr(restored, name) == value
    assert [v.path for v in restored.weights] == [v.path for v in model.weights]
    for saved, loaded in zip(model.weights, restored.weights, strict=True):
        np.testing.assert_array_equal(saved.numpy(), loaded.numpy())
    # The restored optimizer continues as the original: one more step, the same weights.
    more = view_pairs(steps=1, seed=5)
    model.fit(more, epochs=1, verbose=0)
    restored.fit(more, epochs=1, verbose=0)
    for a, b in zip(model.weights, restored.weights, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.method=moco", "model.method: must be one of byol, simsiam, simclr; got 'moco'"),
        (
            "model.tau_schedule=linear",
            "model.tau_schedule: must be one of cosine, constant; got 'linear'",
        ),
        ("model.temperature=0", "model.temperature: must be > 0.0, got 0.0"),
        ("model.predictor=maybe", "model.predictor: expected bool, got 'maybe'"),
    ],
)
def test_bad_method_keys_exit_2_with_one_line(tmp_path, capsys, override, message):
    with pytest.raises(UsageError) as raised:
        load_config(None, [override])
    assert str(raised.value) == message
    assert main(["train", "--output", str(tmp_path / "run"), "--set", override]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"byol-keras: error: {message}"]
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_changing_the_method_of_a_run_is_refused_as_another_model(tmp_path, capsys):
    run = tmp_path / "run"
    short = ["train.epochs=1", "train.steps_per_epoch=2", "train.checkpoint_every_steps=null"]
    assert main(_train_args(run, *short)) == 0
    assert main(_train_args(run, *short, "model.method=simsiam", "--resume-with-changes")) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "model.method: 'byol' -> 'simsiam'" in error and "another model" in error


def _train_args(run: Path, *overrides: str) -> list[str]:
    args = ["train", "--output", str(run)]
    for override in (*TINY, *overrides):
        args += [override] if override.startswith("--") else ["--set", override]
    return args


def _epoch_losses(run: Path) -> list[float]:
    with (run / "metrics.csv").open() as stream:
        return [float(row["loss"]) for row in csv.DictReader(stream)]


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_each_method_trains_the_digits_quickstart_with_a_falling_loss(tmp_path, method):
    run = tmp_path / "run"
    assert main(_train_args(run, *METHODS[method], "train.checkpoint_every_steps=null")) == 0
    losses = _epoch_losses(run)
    assert len(losses) == EPOCHS and all(math.isfinite(loss) for loss in losses)
    assert losses[-1] < losses[0], losses
    summary = json.loads((run / "summary.json").read_text())
    assert math.isfinite(summary["final_collapse"])
    assert (summary["final_tau"] is None) == (method != "byol_no_predictor")
    model = load_model(run / "model.keras")
    assert type(model).method == method.split("_")[0]
    backbone = load_model(run / "backbone.keras")
    images = np.random.default_rng(0).uniform(size=(4, SIZE, SIZE, 3)).astype("float32")
    np.testing.assert_allclose(model(images), backbone(images), atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_each_method_resumes_after_a_kill_and_exports_with_verified_parity(tmp_path, method):
    run = tmp_path / "run"
    command = [sys.executable, "-m", "byol_keras", *_train_args(run, *METHODS[method])]
    killed_at = kill_after_first_checkpoint(command, run, ENV)

    second = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-2000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == EPOCHS * STEPS
    assert summary["resumed_from_step"] >= killed_at > 0
    # A resumed run restarts the data stream, so its losses are not the uninterrupted run's
    # (whose fall the test above checks): here they need only be finite.
    assert all(math.isfinite(loss) for loss in _epoch_losses(run))
    model = load_model(run / "model.keras")
    assert type(model).method == method.split("_")[0]
    assert int(model.optimizer.iterations.numpy()) == EPOCHS * STEPS

    export = subprocess.run(
        [sys.executable, "-m", "byol_keras", "export", "--run", str(run), "--format", "onnx"],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert export.returncode == 0, export.stderr[-2000:]
    manifest = json.loads((run / "export" / "manifest.json").read_text())
    assert manifest["verification"]["passed"] is True
    checks = [c for checks in manifest["verification"]["onnx"].values() for c in checks.values()]
    assert checks and all(c["max_abs_diff"] <= c["tolerance"] for c in checks)


@pytest.mark.slow
def test_two_mirrored_replicas_match_one_device_for_simclr_and_simsiam(tmp_path):
    """SimCLR's negatives span the global batch: 2 replicas give one device's loss and weights."""
    out = tmp_path / "methods.npz"
    helper = ROOT / "tests" / "helpers" / "distribute.py"
    subprocess.run([sys.executable, str(helper), "methods", str(out)], check=True, env=ENV)
    r = np.load(out)
    for method in ("simclr", "simsiam"):
        assert r[f"{method}_single_replicas"] == 1 and r[f"{method}_mirrored_replicas"] == 2
        single, mirrored = float(r[f"{method}_single_loss"]), float(r[f"{method}_mirrored_loss"])
        # NT-Xent over 4 local anchors and 7 candidates would not give the 8-image loss.
        assert mirrored == pytest.approx(single, rel=1e-5)
        np.testing.assert_allclose(
            r[f"{method}_mirrored_online"], r[f"{method}_single_online"], atol=1e-4
        )
