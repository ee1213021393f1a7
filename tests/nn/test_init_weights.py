"""`model.init_weights`: the backbone (and target) start from a file, mismatches exit 2."""

import json
import logging

import keras
import numpy as np
import pytest

from byol_keras.builders import build_model
from byol_keras.cli import main
from byol_keras.config import from_dict
from byol_keras.data import load_source
from byol_keras.errors import UsageError
from byol_keras.evaluation.features import Embedder, source_arrays
from byol_keras.nn.backbones import build_backbone
from byol_keras.registration import load_model
from tests.helpers.export import make_finished_run

SIZE = 16
MODEL = {
    "backbone": "tiny",
    "width": 4,
    "projection_dim": 8,
    "projector_hidden_dim": 16,
    "predictor_hidden_dim": 16,
}


@pytest.fixture(scope="module")
def source_run(tmp_path_factory):
    """A finished digits run whose backbone moved away from its initial weights."""
    return make_finished_run(tmp_path_factory.mktemp("source"), image_size=SIZE)


def config_starting_from(path, **model):
    return from_dict(
        {"data": {"image_size": SIZE}, "model": {**MODEL, **model, "init_weights": str(path)}}
    )


def assert_same_weights(model, reference):
    assert len(model.weights) == len(reference.weights)
    for ours, theirs in zip(model.get_weights(), reference.get_weights(), strict=True):
        np.testing.assert_array_equal(ours, theirs)


def test_a_runs_backbone_gives_that_runs_features_at_step_0(source_run, caplog):
    reference = load_model(source_run.backbone_path, compile=False)
    keras.utils.set_random_seed(5)  # another seed than the source run's: no accidental match
    with caplog.at_level(logging.INFO, logger="byol_keras.nn.init_weights"):
        model = build_model(config_starting_from(source_run.backbone_path), total_steps=10)

    count = len(reference.weights)
    assert f"loaded {count} of {count} tensors" in caplog.text
    assert_same_weights(model.online_backbone, reference)
    assert_same_weights(model.target_backbone, reference)  # the target starts as the copy
    images, _ = source_arrays(load_source("digits", split="test", image_size=SIZE), 64)
    np.testing.assert_array_equal(
        Embedder(model.online_backbone).embed(images), Embedder(reference).embed(images)
    )


def test_a_weights_file_and_a_whole_model_load_too(source_run, tmp_path):
    reference = load_model(source_run.backbone_path, compile=False)
    reference.save_weights(tmp_path / "backbone.weights.h5")
    for path in (tmp_path / "backbone.weights.h5", source_run.model_path):
        keras.utils.set_random_seed(5)
        model = build_model(config_starting_from(path), total_steps=10)
        assert_same_weights(model.online_backbone, reference)


def test_a_weights_file_of_another_width_is_refused(source_run, tmp_path):
    build_backbone("tiny", SIZE, width=8).save_weights(tmp_path / "wide.weights.h5")
    with pytest.raises(UsageError) as refused:
        build_model(config_starting_from(tmp_path / "wide.weights.h5"), total_steps=10)
    # Keras names the tensors of a weights file by layer type and order.
    assert "layers/batch_normalization/vars/0 [8] in the file, [4] here" in str(refused.value)
    assert str(refused.value).endswith("and 17 more")


def test_a_mismatched_backbone_exits_2_with_one_line_before_writing(source_run, tmp_path, capsys):
    output = tmp_path / "run"
    code = main(["train", "--output", str(output),
                 "--set", "data.image_size=16", "model.width=8",
                 f"model.init_weights={source_run.backbone_path}"])  # fmt: skip

    error = capsys.readouterr().err.strip()
    assert code == 2
    assert error.count("\n") == 0
    assert error.startswith("byol-keras: error: model.init_weights: ")
    assert "conv1_conv/kernel [3, 3, 3, 4] in the file, [3, 3, 3, 8] here" in error
    assert not output.exists()


def test_imagenet_weights_are_refused_for_a_backbone_without_them():
    with pytest.raises(UsageError, match="keras.applications backbones only"):
        build_backbone("tiny", SIZE, width=4, weights="imagenet")


def test_the_summary_records_the_weights_a_run_started_from(source_run, tmp_path):
    output = tmp_path / "run"
    code = main(["train", "--output", str(output),
                 "--set", "data.image_size=16", "model.width=4", "model.projection_dim=8",
                 "model.projector_hidden_dim=16", "model.predictor_hidden_dim=16",
                 "train.epochs=1", "train.steps_per_epoch=1", "train.batch_size=8",
                 "train.verbose=0", "eval.final_linear_probe=false",
                 f"model.init_weights={source_run.backbone_path}"])  # fmt: skip

    assert code == 0
    summary = json.loads((output / "summary.json").read_text())
    assert summary["init_weights"] == str(source_run.backbone_path.resolve())
