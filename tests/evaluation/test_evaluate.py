"""Evaluation protocols against scikit-learn and brute-force references, and via the CLI."""

import json
import shutil
import tracemalloc

import keras
import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

from byol_keras.cli import main
from byol_keras.data import load_source
from byol_keras.evaluation import compare_with_random_init, evaluate_run
from byol_keras.evaluation.features import Embedder, source_arrays
from byol_keras.evaluation.finetune import (
    balanced_subset,
    finetune_batch_size,
    finetune_classifier,
)
from byol_keras.evaluation.linear import fit_linear_probe
from byol_keras.nn.backbones import build_backbone
from byol_keras.registration import load_model
from tests.helpers.runs import RUN_CONFIG, make_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def digits_features(run):
    """Backbone features of the digits train and test splits, computed outside the library's
    evaluation code path."""
    backbone = load_model(run.backbone_path, compile=False)
    sets = []
    for split in ("train", "test"):
        images, labels = source_arrays(load_source("digits", split=split, image_size=8))
        sets.append((backbone.predict(images / 255.0, verbose=0), labels))
    return sets


def test_linear_probe_matches_scikit_learn_on_fixed_features():
    digits = load_digits()
    features, labels = digits.data, digits.target
    train, test = np.arange(0, 1200), np.arange(1200, len(labels))
    l2 = 1e-3
    probe = fit_linear_probe(features[train], labels[train], 10, l2=l2, max_iter=2000)
    ours = np.mean(probe.scores(features[test]).argmax(axis=1) == labels[test])

    mean, std = features[train].mean(0), features[train].std(0)
    std[std == 0] = 1.0
    # Same objective: sklearn minimises C·Σ CE + ½‖W‖², ours mean CE + (l2/2)‖W‖².
    reference = LogisticRegression(C=1.0 / (l2 * len(train)), max_iter=5000, tol=1e-8)
    reference.fit((features[train] - mean) / std, labels[train])
    theirs = reference.score((features[test] - mean) / std, labels[test])
    assert ours > 0.9
    assert abs(ours - theirs) <= 0.01
    # Both reach the same optimum, not just the same accuracy.
    np.testing.assert_allclose(
        probe.scores(features[test]),
        reference.predict_proba((features[test] - mean) / std),
        atol=0.02,
    )


def test_linear_probe_chooses_l2_on_held_out_data():
    digits = load_digits()
    probe = fit_linear_probe(digits.data[:600], digits.target[:600], 10, max_iter=300)
    assert set(probe.validation_accuracy) == {"1e-06", "1e-05", "0.0001", "0.001", "0.01"}
    assert probe.validation_accuracy[f"{probe.l2:g}"] == max(probe.validation_accuracy.values())


def test_balanced_subset_is_stratified_and_reproducible():
    labels = np.repeat(np.arange(4), [100, 200, 50, 7])
    subset = balanced_subset(labels, 0.1, seed=5)
    counts = np.bincount(labels[subset], minlength=4)
    assert counts.tolist() == [10, 20, 5, 1]  # round(0.1 × n), at least one per class
    assert np.array_equal(subset, balanced_subset(labels, 0.1, seed=5))
    assert not np.array_equal(subset, balanced_subset(labels, 0.1, seed=6))
    assert len(np.unique(subset)) == len(subset)
    assert np.array_equal(balanced_subset(labels, 1.0, seed=0), np.arange(len(labels)))


def test_small_subsets_get_smaller_batches():
    assert finetune_batch_size(60_000, 256) == 256
    assert finetune_batch_size(144, 256) == 15  # ten steps per epoch
    assert finetune_batch_size(20, 256) == 8  # but no batch below eight images
    assert finetune_batch_size(5, 256) == 5


def test_finetuned_batchnorm_statistics_are_those_of_the_labelled_images():
    keras.utils.set_random_seed(0)
    images, labels = source_arrays(load_source("digits", split="test", image_size=8))
    backbone = build_backbone("tiny", 8, width=4)
    classifier = finetune_classifier(backbone, images, labels, 10, epochs=1, batch_size=64)
    # All 360 images fit in the recalibration batch: the moving statistics are theirs.
    conv = keras.Model(backbone.input, backbone.get_layer("conv1_conv").output)
    activations = conv(images.astype(np.float32) / 255.0).numpy().reshape(-1, 4)
    bn = backbone.get_layer("conv1_bn")
    np.testing.assert_allclose(bn.moving_mean.numpy(), activations.mean(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), activations.var(0), rtol=1e-3)
    assert classifier.output_shape == (None, 10)


def test_knn_protocol_matches_brute_force_reference(run, digits_features):
    result = evaluate_run(run.root, "knn", overrides=["eval.knn_k=20"])
    (train_features, train_labels), (test_features, test_labels) = digits_features
    train_unit = train_features / np.linalg.norm(train_features, axis=1, keepdims=True)
    test_unit = test_features / np.linalg.norm(test_features, axis=1, keepdims=True)
    similarity = test_unit @ train_unit.T
    nearest = np.argsort(-similarity, axis=1)[:, :20]
    weights = np.exp(np.take_along_axis(similarity, nearest, axis=1) / 0.1)
    scores = np.zeros([len(test_labels), 10])
    for row in range(len(test_labels)):
        np.add.at(scores[row], train_labels[nearest[row]], weights[row])
    expected = np.mean(scores.argmax(axis=1) == test_labels)
    assert result["top1"] == pytest.approx(expected, abs=1 / len(test_labels) + 1e-9)
    assert result["parameters"]["k"] == 20
    assert (result["n_train"], result["n_test"]) == (1437, 360)
    saved = json.loads((run.eval_dir / "knn.json").read_text())
    assert saved["top1"] == result["top1"]
    assert set(saved["per_class_top1"]) == {str(d) for d in range(10)}
    assert 0.0 <= saved["top1"] <= saved["top5"] <= 1.0
    assert saved["wall_time_seconds"] > 0


def test_linear_protocol_matches_scikit_learn_on_the_run(run, digits_features):
    result = evaluate_run(run.root, "linear")
    (train_features, train_labels), (test_features, test_labels) = digits_features
    mean, std = train_features.mean(0), train_features.std(0)
    std[std == 0] = 1.0
    l2 = result["parameters"]["l2"]
    reference = LogisticRegression(C=1.0 / (l2 * len(train_labels)), max_iter=5000)
    reference.fit((train_features - mean) / std, train_labels)
    expected = reference.score((test_features - mean) / std, test_labels)
    assert abs(result["top1"] - expected) <= 0.01
    assert (run.eval_dir / "linear.json").is_file()


def test_finetune_and_random_baseline_write_their_own_files(run):
    result = evaluate_run(run.root, "finetune", label_fraction=0.1, baseline="random")
    assert result["backbone"] == "random_init"
    assert result["parameters"]["label_fraction"] == 0.1
    # Digits train has 1,437 images, about 144 per class: 10% of each is 14 or 15.
    assert 140 <= result["parameters"]["n_labelled"] <= 150
    saved = json.loads((run.eval_dir / "finetune-10pct-random.json").read_text())
    assert saved["top1"] == result["top1"]
    assert "finetune" in result["summary_line"] and "top-1" in result["summary_line"]


def test_compare_with_random_init_merges_both_probes_into_summary(tmp_path):
    run = make_run(tmp_path / "run")
    summary = compare_with_random_init(run.root)
    on_disk = run.read_summary()
    assert on_disk == summary
    assert on_disk["epochs"] == 1  # what training wrote is kept
    assert on_disk["finished"] is True  # and so is the finished mark
    assert (
        on_disk["linear_probe_top1"]
        == json.loads((run.eval_dir / "linear.json").read_text())["top1"]
    )
    random_result = json.loads((run.eval_dir / "linear-random.json").read_text())
    assert on_disk["linear_probe_top1_random_init"] == random_result["top1"]


def _cli_error(capsys, argv):
    code = main(argv)
    error = capsys.readouterr().err.strip()
    return code, error


def test_cli_refuses_a_run_without_model(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, error = _cli_error(
        capsys, ["evaluate", "--run", str(tmp_path / "empty"), "--protocol", "knn"]
    )
    assert code == 2
    assert error.startswith("byol-keras: error: --run:") and "not a finished run" in error


@pytest.mark.parametrize("fraction", ["0", "1.5", "-0.1"])
def test_cli_refuses_label_fraction_outside_unit_interval(run, capsys, fraction):
    argv = [
        "evaluate",
        "--run",
        str(run.root),
        "--protocol",
        "finetune",
        "--label-fraction",
        fraction,
    ]
    code, error = _cli_error(capsys, argv)
    assert code == 2
    assert "--label-fraction" in error and "(0, 1]" in error


def test_cli_refuses_label_fraction_for_other_protocols(run, capsys):
    argv = ["evaluate", "--run", str(run.root), "--protocol", "linear", "--label-fraction", "0.1"]
    code, error = _cli_error(capsys, argv)
    assert code == 2 and "finetune, segment and detect only" in error


def test_cli_refuses_unlabelled_data(run, tmp_path, capsys):
    unlabelled = tmp_path / "unlabelled.npz"
    rng = np.random.default_rng(0)
    np.savez(unlabelled, x_train=rng.integers(0, 255, (20, 8, 8), dtype=np.uint8),
             x_test=rng.integers(0, 255, (10, 8, 8), dtype=np.uint8))  # fmt: skip
    for protocol in ("linear", "knn", "finetune"):
        argv = ["evaluate", "--run", str(run.root), "--protocol", protocol,
                "--data", f"npz:{unlabelled}"]  # fmt: skip
        code, error = _cli_error(capsys, argv)
        assert code == 2
        assert "has no labels" in error


def test_cli_refuses_a_run_without_val_source(tmp_path, capsys):
    config = {**RUN_CONFIG, "data": {"source": "digits", "image_size": 8}}
    run = make_run(tmp_path / "run", config)
    code, error = _cli_error(capsys, ["evaluate", "--run", str(run.root), "--protocol", "knn"])
    assert code == 2 and "--data" in error and "val_source" in error


def test_an_eval_folder_that_cannot_be_written_is_refused_before_the_probe(
    run, tmp_path, capsys, monkeypatch
):
    # Root ignores permission bits; a regular file where eval/ goes refuses every write.
    copy = tmp_path / "run"
    shutil.copytree(run.root, copy, ignore=shutil.ignore_patterns("eval"))
    (copy / "eval").write_text("not a folder")

    def fit_linear_probe(*args, **kwargs):
        raise AssertionError("the probe was trained although its result cannot be written")

    monkeypatch.setattr("byol_keras.evaluation.evaluate.fit_linear_probe", fit_linear_probe)
    code, error = _cli_error(capsys, ["evaluate", "--run", str(copy), "--protocol", "linear"])
    assert code == 2
    assert error == f"byol-keras: error: --run: '{copy / 'eval'}' exists and is not a directory"


def test_cli_prints_one_result_line(run, capsys):
    code = main(["evaluate", "--run", str(run.root), "--protocol", "knn", "--set", "eval.knn_k=5"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert code == 0
    assert len(lines) == 1 and lines[0].startswith("knn (pretrained) on digits:test: top-1 ")


def test_embedder_scales_uint8_like_the_backbone_expects():
    keras.utils.set_random_seed(0)
    backbone = build_backbone("tiny", 8, width=4)
    images = np.random.default_rng(0).integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    expected = backbone(images.astype(np.float32) / 255.0, training=False).numpy()
    np.testing.assert_allclose(Embedder(backbone, batch_size=2).embed(images), expected, atol=1e-5)


def _grey_folders(root, split, classes, per_class=4):
    """Tiny solid-grey PNGs, one well-separated grey level per class name."""
    from PIL import Image

    for name in classes:
        level = {"a": 30, "b": 130, "c": 230, "d": 180}[name]
        folder = root / split / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.new("RGB", (8, 8), (level + i,) * 3).save(folder / f"{i}.png")


def test_knn_scores_a_test_split_missing_a_class_against_the_right_classes(run, tmp_path, caplog):
    _grey_folders(tmp_path, "train", ["a", "b", "c"])
    _grey_folders(tmp_path, "test", ["a", "c"])
    argv = {"protocol": "knn", "data": f"folder:{tmp_path}", "overrides": ["eval.knn_k=3"]}
    with caplog.at_level("WARNING", logger="byol_keras"):
        result = evaluate_run(run.root, **argv)
    # Grey levels 30/130/230 are far apart: every test image's 3 neighbours share its class.
    assert result["top1"] == 1.0
    assert result["per_class_top1"] == {"a": 1.0, "b": None, "c": 1.0}
    assert any("none in the test split (b)" in r.getMessage() for r in caplog.records)


def test_a_test_class_unknown_to_the_train_split_is_refused(run, tmp_path, capsys):
    _grey_folders(tmp_path, "train", ["a", "b"])
    _grey_folders(tmp_path, "test", ["a", "d"])
    argv = ["evaluate", "--run", str(run.root), "--protocol", "knn", "--data", f"folder:{tmp_path}"]
    code, error = _cli_error(capsys, argv)
    assert code == 2 and "no training examples: d" in error and len(error.splitlines()) == 1


@pytest.mark.parametrize(
    ("data", "overrides"),
    [
        ("digits", ["eval.train_split=all"]),  # all holds test
        ("folder:{flat}", []),  # no split folders: train and test are the same files
    ],
)
def test_train_and_test_sharing_examples_are_refused(run, tmp_path, capsys, data, overrides):
    _grey_folders(tmp_path, "flat", ["a", "b"])
    argv = ["evaluate", "--run", str(run.root), "--protocol", "knn",
            "--data", data.format(flat=tmp_path / "flat")]  # fmt: skip
    for override in overrides:
        argv += ["--set", override]
    code, error = _cli_error(capsys, argv)
    assert code == 2 and "are also training examples" in error


def test_knn_monitor_refuses_a_bank_that_holds_the_queries():
    from byol_keras.errors import UsageError
    from byol_keras.evaluation.monitor import KnnMonitor

    bank, queries = (load_source("digits", split=s, image_size=8) for s in ("all", "test"))
    with pytest.raises(UsageError, match="360 of the 360 test examples"):
        KnnMonitor.from_sources(bank, queries)


def test_embedding_a_source_streams_and_equals_embedding_its_images(tmp_path):
    # A folder with loose (unlabelled, -1) files among labelled ones, and a subset.
    rng = np.random.default_rng(0)
    for index in range(23):
        folder = tmp_path / ("" if index % 5 == 0 else f"class_{index % 3}")
        folder.mkdir(exist_ok=True)
        pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{index:02d}.png")
    source = load_source(f"folder:{tmp_path}", image_size=8)
    keras.utils.set_random_seed(0)
    embedder = Embedder(build_backbone("tiny", 8, width=4), batch_size=4)

    for max_examples in (None, 15):
        images, labels = source_arrays(source, max_examples, seed=3)
        labelled = labels >= 0
        assert 0 < labelled.sum() < len(labels)
        features, streamed_labels = embedder.embed_source(source, max_examples, seed=3)
        np.testing.assert_array_equal(streamed_labels, labels[labelled])
        np.testing.assert_allclose(features, embedder.embed(images[labelled]), rtol=0, atol=1e-6)


@pytest.mark.slow
def test_evaluation_never_holds_the_images_in_memory(tmp_path):
    config = {**RUN_CONFIG, "data": {**RUN_CONFIG["data"], "image_size": 64}}
    run = make_run(tmp_path / "run", config)
    evaluate_run(run.root, "knn", overrides=["eval.knn_k=5"])  # traces the functions once
    image_bytes = (1437 + 360) * 64 * 64 * 3  # digits train + test at 64 px, uint8 RGB
    tracemalloc.start()
    try:
        result = evaluate_run(run.root, "knn", overrides=["eval.knn_k=5"])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (result["n_train"], result["n_test"]) == (1437, 360)
    # NumPy reports its allocations to tracemalloc: holding the images would take image_bytes.
    assert peak < image_bytes / 4, (peak, image_bytes)


def test_results_on_other_data_get_their_own_file_and_never_overwrite(tmp_path, capsys):
    run = make_run(tmp_path / "run")
    argv = ["evaluate", "--run", str(run.root), "--protocol", "knn", "--set", "eval.knn_k=5"]
    assert main(argv) == 0
    default = json.loads((run.eval_dir / "knn.json").read_text())
    assert default["data"] == "digits"

    rng = np.random.default_rng(0)
    other = tmp_path / "other set.npz"
    np.savez(other, x_train=rng.integers(0, 255, (40, 8, 8), dtype=np.uint8),
             y_train=np.arange(40) % 4, x_test=rng.integers(0, 255, (20, 8, 8), dtype=np.uint8),
             y_test=np.arange(20) % 4)  # fmt: skip
    assert main([*argv, "--data", f"npz:{other}"]) == 0
    files = sorted(p.name for p in run.eval_dir.iterdir())
    assert len(files) == 2 and files[0] == "knn.json" and files[1].startswith("knn@npz_"), files
    named = run.eval_dir / files[1]
    assert json.loads(named.read_text())["num_classes"] == 4
    assert json.loads((run.eval_dir / "knn.json").read_text()) == default  # untouched

    # Another data set whose name gives the same file name is refused, not written over it.
    capsys.readouterr()
    clash = tmp_path / "other_set.npz"
    clash.write_bytes(other.read_bytes())
    code, error = _cli_error(capsys, [*argv, "--data", f"npz:{clash}"])
    assert code == 2 and "holds a result on" in error and str(other) in error
    assert json.loads(named.read_text())["data"] == f"npz:{other}"
