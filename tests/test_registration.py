"""byol_keras.load_model: every kind of saved file loads, whatever was imported before or after."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import keras
import pytest

from byol_keras.augment.pipelines import make_augmenter
from byol_keras.methods.byol import BYOL
from byol_keras.nn.backbones import build_backbone
from byol_keras.training.lars import LARS
from byol_keras.training.schedules import WarmupCosine
from byol_keras.transfer.detector import build_detector
from byol_keras.transfer.segmenter import build_segmenter

ROOT = Path(__file__).resolve().parents[1]
# Libraries our users have beside us that import TensorFlow inside their own import.
LIBRARIES = ("keras_cv", "keras_hub", "tensorflow_datasets", "tf2onnx")
# Each saved file and the class names it must load as (the detector's backbone too: the
# class that stayed unregistered when the import hook fired inside keras_cv's import).
EXPECTED = {
    "model": "BYOL LARS",
    "backbone": "Functional",
    "segmenter": "Functional",
    "detector": "RetinaNet PyramidBackbone",
}
LOAD = """
import byol_keras
for kind, path in {paths!r}.items():
    m = byol_keras.load_model(path)
    inner = m.optimizer if kind == "model" else getattr(m, "backbone", None)
    print(kind, type(m).__name__, *([type(inner).__name__] if inner is not None else []))
"""


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[str, str]:
    """A BYOL model.keras (LARS, cosine schedule, augmenter), its backbone, a segmenter and a
    detector, all tiny; the detector's ResNet reaches stride 32, as RetinaNet needs."""
    folder = tmp_path_factory.mktemp("saved")
    keras.utils.set_random_seed(0)
    backbone = build_backbone("tiny", 16, width=4)
    model = BYOL(
        backbone,
        projection_dim=4,
        projector_hidden_dim=8,
        predictor_hidden_dim=8,
        augmenter=make_augmenter("digits", image_size=16),
    )
    model.compile(optimizer=LARS(WarmupCosine(0.1, total_steps=10)))
    resnet = build_backbone("resnet18", 32, stem="imagenet", width=4)
    models = {
        "model": model,
        "backbone": backbone,
        "segmenter": build_segmenter(backbone, 2, decoder_channels=4),
        "detector": build_detector(resnet, 2, (32, 32), head_width=4),
    }
    paths = {}
    for kind, network in models.items():
        paths[kind] = str(folder / f"{kind}.keras")
        network.save(paths[kind])
    return paths


def orders() -> list[str]:
    """`import byol_keras` (TensorFlow still unloaded) just before each library, and after all.

    The hook fired in the first import after ours that loaded TensorFlow, so each library
    gets its own interpreter there; after ours is imported last, one interpreter is enough
    to have every library before it.
    """
    found = [name for name in LIBRARIES if importlib.util.find_spec(name) is not None]
    first = "import byol_keras, sys; assert 'tensorflow' not in sys.modules, 'imported TF'"
    after = "; ".join(f"import {name}" for name in found)
    return [f"{first}; import {name}" for name in found] + [f"{after}; import byol_keras"]


def test_load_model_loads_every_kind_after_any_import_order_in_fresh_processes(saved):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)}
    # One interpreter per order, since the defect lived in the first import of each; they
    # run side by side to keep the fast tier short.
    running = {
        order: subprocess.Popen(
            [sys.executable, "-c", f"{order}\n{LOAD.format(paths=saved)}"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for order in orders()
    }
    assert len(running) >= 4  # keras_cv, tensorflow_datasets and tf2onnx are dependencies
    for order, process in running.items():
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, (order, err[-2000:])
        loaded = dict(line.split(" ", 1) for line in out.strip().splitlines())
        assert loaded == EXPECTED, order
