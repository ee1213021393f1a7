"""oneDNN on by default: set before TensorFlow loads, a user's choice kept, one line if too late."""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from byol_keras import onednn

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import os
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import byol_keras
import tensorflow
from byol_keras import onednn
print(os.environ.get(onednn.ENV), onednn.enabled())
"""


def environment_with(value: str | None) -> dict:
    environment = {k: v for k, v in os.environ.items() if k != onednn.ENV}
    return environment if value is None else {**environment, onednn.ENV: value}


@pytest.mark.parametrize(("user_value", "expected"), [(None, "1 True"), ("0", "0 False")])
def test_import_turns_onednn_on_unless_the_user_said(user_value, expected):
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        capture_output=True,
        text=True,
        env=environment_with(user_value),
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split("\n")[-2] == expected


def test_tensorflow_first_with_onednn_off_gets_one_line_at_the_first_fit(monkeypatch, caplog):
    monkeypatch.setattr(onednn, "_warned", False)
    monkeypatch.setattr(onednn, "enabled", lambda: False)
    monkeypatch.setattr(onednn.platform, "machine", lambda: "x86_64")
    monkeypatch.delenv(onednn.ENV, raising=False)
    with caplog.at_level(logging.WARNING, logger="byol_keras"):
        onednn.warn_once_if_off()
        onednn.warn_once_if_off()
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 1 and f"set {onednn.ENV}=1" in lines[0]


def test_a_user_who_turned_onednn_off_is_not_told(monkeypatch, caplog):
    monkeypatch.setattr(onednn, "_warned", False)
    monkeypatch.setattr(onednn, "enabled", lambda: False)
    monkeypatch.setattr(onednn.platform, "machine", lambda: "x86_64")
    monkeypatch.setenv(onednn.ENV, "0")
    with caplog.at_level(logging.WARNING, logger="byol_keras"):
        onednn.warn_once_if_off()
    assert not caplog.records


@pytest.mark.slow
@pytest.mark.parametrize(("user_value", "expected"), [(None, True), ("0", False)])
def test_the_cli_trains_with_onednn_unless_the_user_said(tmp_path, user_value, expected):
    tiny = ["data.image_size=8", "model.width=4", "model.projection_dim=8"]
    tiny += ["model.projector_hidden_dim=16", "model.predictor_hidden_dim=16", "train.epochs=1"]
    tiny += ["train.steps_per_epoch=1", "train.batch_size=8", "eval.final_linear_probe=false"]
    environment = environment_with(user_value)
    result = subprocess.run(
        [sys.executable, "-m", "byol_keras", "train", "--set", *tiny, "--output", str(tmp_path)],
        capture_output=True,
        text=True,
        env={**environment, "PYTHONPATH": str(ROOT)},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((tmp_path / "summary.json").read_text())["onednn"] is expected
