"""End-to-end BYOL on real images: the loss falls and the representation does not collapse."""

import json

import numpy as np
import pytest

from byol_keras.cli import main
from byol_keras.config import load_config
from byol_keras.pretrain import train

TINY = [
    "model.backbone=tiny",
    "model.width=8",
    "model.projection_dim=32",
    "model.projector_hidden_dim=64",
    "model.predictor_hidden_dim=64",
    "optimizer.name=adamw",
    "optimizer.base_lr=0.002",
    "optimizer.lr_scaling=none",
    "optimizer.warmup_epochs=0",
    "train.verbose=0",
]


@pytest.mark.slow
def test_hundreds_of_steps_on_mnist_lower_the_loss_without_collapse(mnist_npz, tmp_path):
    config = load_config(
        None,
        [
            f"data.source=npz:{mnist_npz}",
            "data.image_size=16",
            "augment.preset=digits",
            "train.batch_size=64",
            "train.epochs=6",
            "train.steps_per_epoch=50",
            *TINY,
        ],
    )
    summary = train(config, tmp_path / "run")
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    losses = [float(row.split(",")[header.index("loss")]) for row in rows[1:]]
    collapse = [float(row.split(",")[header.index("collapse")]) for row in rows[1:]]
    assert summary["steps"] == 300
    assert len(losses) == 6
    assert losses[-1] < 0.7 * losses[0], losses
    assert min(collapse) > 0.3, collapse
    assert summary["final_collapse"] == pytest.approx(collapse[-1], rel=1e-5)


@pytest.mark.slow
def test_cli_train_writes_a_complete_run_directory(tmp_path):
    run = tmp_path / "run"
    args = ["train", "--output", str(run), "--set", "train.epochs=2"]
    args += ["--set", "train.batch_size=64", "--set", "eval.final_linear_probe=false"]
    for override in TINY:
        args += ["--set", override]
    assert main(args) == 0
    for name in ("config.yaml", "metrics.csv", "model.keras", "backbone.keras", "summary.json"):
        assert (run / name).is_file(), name
    assert any((run / "logs").rglob("events.out.tfevents.*"))
    assert any((run / "checkpoints").iterdir())
    summary = json.loads((run / "summary.json").read_text())
    for key in ("epochs", "steps", "final_loss", "final_collapse", "images_per_second"):
        assert summary[key] is not None, key
    assert summary["skipped_files"] == 0
    assert summary["steps"] == 2 * (1437 // 64)
    assert np.isfinite(summary["final_loss"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.source=folder:/no/such/dir", "/no/such/dir"),
        ("data.source=nosuchkind:x", "nosuchkind"),
        ("train.batch_size=4096", "larger than"),
    ],
)
def test_cli_bad_data_source_exits_2(tmp_path, capsys, override, message):
    args = ["train", "--output", str(tmp_path / "run"), "--set", override]
    assert main(args) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("byol-keras: error: ") and "\n" not in error
    assert message in error
