"""tf.distribute: 2 replicas match 1 device, and a 2-process multi-worker run stays in sync.

Both run in subprocesses (tests/helpers/distribute.py): logical devices and
multi-worker collectives must be configured before TensorFlow starts.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from byol_keras.errors import UsageError
from byol_keras.training.distribute import is_chief, make_strategy, writable_run_dir

HELPER = Path(__file__).parents[1] / "helpers" / "distribute.py"
ROOT = HELPER.parents[2]  # the repository root, so that subprocesses import this checkout


def _env(**extra) -> dict:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT), **extra}


def test_none_is_the_default_strategy_and_writes_the_run_directory(tmp_path):
    strategy = make_strategy("none")
    assert strategy.num_replicas_in_sync == 1
    assert is_chief(strategy)
    assert writable_run_dir(tmp_path / "run", strategy) == tmp_path / "run"


def test_multi_worker_without_tf_config_is_a_usage_error(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(UsageError, match="TF_CONFIG"):
        make_strategy("multi_worker")


def test_chief_is_worker_zero_unless_the_cluster_names_a_chief(monkeypatch):
    class Resolver:
        def __init__(self, task_type, task_id):
            self.task_type, self.task_id = task_type, task_id

    class Strategy:
        def __init__(self, *task):
            self.cluster_resolver = Resolver(*task)

    workers = {"cluster": {"worker": ["a:1", "b:2"]}}
    monkeypatch.setenv("TF_CONFIG", json.dumps(workers))
    assert is_chief(Strategy("worker", 0))
    assert not is_chief(Strategy("worker", 1))
    monkeypatch.setenv(
        "TF_CONFIG", json.dumps({"cluster": {**workers["cluster"], "chief": ["c:3"]}})
    )
    assert is_chief(Strategy("chief", 0))
    assert not is_chief(Strategy("worker", 0))


@pytest.fixture(scope="module")
def mirrored_results(tmp_path_factory):
    """One subprocess trains every one-device and 2-replica case of the helper."""
    out = tmp_path_factory.mktemp("mirrored") / "mirrored.npz"
    subprocess.run(
        [sys.executable, str(HELPER), "mirrored", str(out)], check=True, env=_env(), timeout=240
    )
    return np.load(out)


@pytest.mark.slow
def test_two_mirrored_replicas_match_one_device_with_the_same_global_batch(mirrored_results):
    r = mirrored_results
    assert r["single_replicas"] == 1 and r["mirrored_replicas"] == 2
    # Synchronised BatchNorm everywhere: only the order of float32 sums differs.
    assert float(r["mirrored_loss"]) == pytest.approx(float(r["single_loss"]), rel=1e-5)
    np.testing.assert_allclose(r["mirrored_online"], r["single_online"], atol=1e-4)
    np.testing.assert_allclose(r["mirrored_target"], r["single_target"], atol=1e-4)
    # The EMA runs per replica on identical inputs: the copies stay bit-identical.
    assert r["mirrored_replica_spread"] == 0.0
    # Control: per-replica BatchNorm statistics change the result well beyond that tolerance.
    assert np.max(np.abs(r["mirrored_unsynced_online"] - r["single_online"])) > 1e-2
    assert r["mirrored_unsynced_replica_spread"] > 0.0  # unsynced moving statistics drift apart


@pytest.mark.slow
def test_byol_with_default_arguments_in_a_mirrored_scope_matches_one_device(mirrored_results):
    # The Python API path: BYOL(...) built in strategy.scope(), no sync_batchnorm argument.
    r = mirrored_results
    assert r["default_single_replicas"] == 1 and r["default_mirrored_replicas"] == 2
    assert float(r["default_mirrored_loss"]) == pytest.approx(
        float(r["default_single_loss"]), rel=1e-5
    )
    # Synchronised BatchNorm adds the replicas' moments in another order than one device
    # does; after two steps at learning rate 0.5 that leaves differences of ~1e-4.
    for part in ("online", "target"):
        np.testing.assert_allclose(
            r[f"default_mirrored_{part}"], r[f"default_single_{part}"], rtol=1e-3, atol=1e-4
        )
    assert r["default_mirrored_replica_spread"] == 0.0
    # Control: the same model with sync_batchnorm=False does not match one device.
    unsynced = r["default_mirrored_unsynced_online"]
    assert np.max(np.abs(unsynced - r["default_single_online"])) > 1e-2


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


def _start_workers(tmp_path, run_dir, tag, *helper_args) -> list:
    """Two localhost workers of one cluster, running `helper_args` of the worker helper."""
    cluster = {"worker": [f"localhost:{_free_port()}" for _ in range(2)]}
    workers = []
    for index in range(2):
        config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        out = tmp_path / f"{tag}{index}.npz"
        workers.append(
            subprocess.Popen(
                [sys.executable, str(HELPER), "worker", str(run_dir), str(out), *helper_args],
                env=_env(TF_CONFIG=config),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    return workers


def _finish(workers) -> None:
    try:
        outputs = [worker.communicate(timeout=240)[0] for worker in workers]
    finally:
        for worker in workers:
            worker.kill()
    for worker, output in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, output[-3000:]


@pytest.mark.slow
def test_two_worker_processes_train_in_step_and_only_the_chief_writes_the_run(tmp_path):
    run_dir = tmp_path / "run"
    _finish(_start_workers(tmp_path, run_dir, "w"))

    chief, other = (np.load(tmp_path / f"w{index}.npz") for index in range(2))
    assert int(chief["steps"]) == int(other["steps"]) == 3
    np.testing.assert_array_equal(chief["online"], other["online"])
    np.testing.assert_array_equal(chief["target"], other["target"])
    # Training did happen: the EMA left the target behind the online network.
    assert not np.allclose(chief["online"][: chief["target"].size], chief["target"])
    assert np.isfinite(float(chief["loss"]))
    # The chief wrote the run directory; worker 1 its own folder inside it, never read back.
    assert str(chief["wrote_to"]) == str(run_dir)
    assert str(other["wrote_to"]) == str(run_dir / ".workers" / "worker-1")
    assert json.loads((run_dir / "summary.json").read_text())["replicas"] == 2
    assert sorted(p.name for p in (run_dir / ".workers").iterdir()) == ["worker-1"]


def _latest_step(checkpoints: Path) -> int:
    latest = tf.train.latest_checkpoint(str(checkpoints)) if checkpoints.is_dir() else None
    return int(latest.rsplit("-", 1)[1]) if latest else 0


@pytest.mark.slow
def test_killed_workers_restart_from_the_chiefs_checkpoint_and_end_identical(tmp_path):
    run_dir, steps, every = tmp_path / "run", 12, 2
    first = _start_workers(tmp_path, run_dir, "first", str(steps), str(every))
    deadline = time.monotonic() + 240
    while _latest_step(run_dir / "checkpoints") < every and all(w.poll() is None for w in first):
        assert time.monotonic() < deadline, "no checkpoint within 240 s"
        time.sleep(0.02)
    for worker in first:
        worker.send_signal(signal.SIGKILL)
    outputs = [worker.communicate()[0] for worker in first]
    assert [w.returncode for w in first] == [-signal.SIGKILL] * 2, outputs[0][-2000:]
    assert not (run_dir / "model.keras").exists(), "the run finished before it was killed"
    killed_at = _latest_step(run_dir / "checkpoints")
    assert 0 < killed_at < steps

    _finish(_start_workers(tmp_path, run_dir, "second", str(steps), str(every)))
    chief, other = (np.load(tmp_path / f"second{index}.npz") for index in range(2))
    # Both restored the chief's latest checkpoint, so both ran the same steps after it.
    assert int(chief["resumed_from_step"]) == int(other["resumed_from_step"]) >= killed_at
    assert int(chief["steps"]) == int(other["steps"]) == steps
    np.testing.assert_array_equal(chief["online"], other["online"])
    np.testing.assert_array_equal(chief["target"], other["target"])


def test_importing_byol_keras_leaves_tensorflow_unstarted():
    # A MultiWorkerMirroredStrategy made after any op cannot configure collectives.
    code = (
        "import byol_keras.pretrain, byol_keras.cli\n"
        "from tensorflow.python.eager import context\n"
        "assert context.context()._context_handle is None, 'an import ran a TF op'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=_env(), timeout=120)


def test_make_strategy_rejects_unknown_names():
    with pytest.raises(UsageError, match="train.distribution"):
        make_strategy("horovod")


def test_sync_batchnorm_survives_the_target_copy():
    from byol_keras.methods.byol import BYOL
    from byol_keras.nn.backbones import build_backbone, synchronize_batchnorm

    model = BYOL(
        synchronize_batchnorm(build_backbone("tiny", 16, width=4)),
        projection_dim=8,
        projector_hidden_dim=16,
        predictor_hidden_dim=16,
        sync_batchnorm=True,
    )
    norms = [
        layer
        for net in (model.online_backbone, model.target_backbone, model.target_projector)
        for layer in net.layers
        if isinstance(layer, tf.keras.layers.BatchNormalization)
    ]
    assert len(norms) == 4 + 4 + 1 and all(layer.synchronized for layer in norms)
