"""--protocol segment: the metric against a hand computation, the protocol end to end, refusals."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from byol_keras.cli import main
from byol_keras.evaluation import evaluate_run
from byol_keras.nn.backbones import build_backbone
from byol_keras.nn.precise_bn import PreciseBN
from byol_keras.registration import load_model
from byol_keras.transfer.segmentation.augment import JointAugment
from byol_keras.transfer.segmentation.metrics import confusion_matrix, segmentation_scores
from byol_keras.transfer.segmentation.model import build_segmenter
from byol_keras.transfer.segmentation.training import _training_batches, finetune_segmenter
from tests.helpers.runs import make_run
from tests.helpers.segfolder import VOID, make_segfolder, write_pair

SEGMENT = {
    "image_size": [16, 24],
    "epochs": 2,
    "batch_size": 2,
    "decoder_channels": 4,
    "num_classes": 3,
    "ignore_index": VOID,
    "class_names": "sky, road, car",
}


def _config(root, split="train+val"):
    return {
        "data": {"source": f"segfolder:{root}", "split": split, "image_size": 16},
        "model": {"backbone": "tiny", "width": 4, "projection_dim": 8},
        "train": {"epochs": 1, "batch_size": 2},
        "segment": SEGMENT,
    }


@pytest.fixture(scope="module")
def segrun(tmp_path_factory):
    root = make_segfolder(tmp_path_factory.mktemp("segfolder"))
    return make_run(tmp_path_factory.mktemp("run"), _config(root)), root


def test_mean_iou_and_pixel_accuracy_equal_a_hand_computation_with_a_void_pixel():
    true = np.array([[0, 0, 1], [1, 2, VOID]])
    predicted = np.array([[0, 1, 1], [1, 2, 0]])  # the void pixel's prediction never counts
    confusion = confusion_matrix(true, predicted, 3, VOID)
    np.testing.assert_array_equal(confusion, [[1, 1, 0], [0, 2, 0], [0, 0, 1]])
    scores = segmentation_scores(confusion, ["a", "b", "c"])
    # a: TP 1, FN 1, FP 0 -> 1/2; b: TP 2, FP 1 -> 2/3; c: 1/1. Accuracy: 4 of 5 labelled.
    assert scores["per_class_iou"] == pytest.approx({"a": 1 / 2, "b": 2 / 3, "c": 1.0})
    assert scores["mean_iou"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert scores["pixel_accuracy"] == pytest.approx(4 / 5)


def test_one_matrix_over_the_split_is_not_the_mean_of_per_image_ious():
    images = [(np.array([0, 0, 0, 1]), np.array([0, 0, 0, 0])), (np.array([1]), np.array([1]))]
    total = sum(confusion_matrix(t, p, 2, None) for t, p in images)
    scores = segmentation_scores(total, ["a", "b"])
    assert scores["per_class_iou"] == pytest.approx({"a": 3 / 4, "b": 1 / 2})
    assert segmentation_scores(np.zeros((2, 2)), ["a", "b"])["per_class_iou"] == {
        "a": None,
        "b": None,
    }


def test_segment_protocol_writes_its_result_and_a_model_that_reproduces_it(segrun, capsys):
    run, root = segrun
    code = main(
        ["evaluate", "--run", str(run.root), "--protocol", "segment", "--label-fraction", "0.5"]
    )
    assert code == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("segment (pretrained)") and "segment-50pct.json" in line
    result = json.loads((run.eval_dir / "segment-50pct.json").read_text())
    assert result["n_train"] == 2 and result["n_train_available"] == 3 and result["n_test"] == 3
    assert set(result["per_class_iou"]) == {"sky", "road", "car"}
    assert result["parameters"]["epochs"] == 2 and result["wall_time_seconds"] > 0
    # The order the result had before the shared skeleton: the task's own words, then these.
    assert list(result["parameters"])[-5:] == [
        "decoder", "augmentation", "selection", "batchnorm", "input"
    ]  # fmt: skip
    assert len(result["val_curve"]) == 2 and 1 <= result["best_epoch"] <= 2
    # The kept model, reloaded, gives the recorded confusion matrix on the test masks.
    model = load_model(run.eval_dir / "segment-50pct" / "model.keras")
    np.testing.assert_array_equal(_test_confusion(model, root), result["confusion_matrix"])


def _test_confusion(model, root):
    """The confusion matrix of `model` on the segfolder's test split, computed here."""
    confusion = np.zeros((3, 3), np.int64)
    for name in ("test0", "test1", "test2"):
        image = np.asarray(
            tf.io.decode_png(tf.io.read_file(str(root / "test/images" / f"{name}.png")))
        )
        true = np.asarray(
            tf.io.decode_png(tf.io.read_file(str(root / "test/masks" / f"{name}.png")))
        )[..., 0]
        pixels = tf.image.resize(image[None] / 255.0, (16, 24), method="bilinear")
        logits = tf.image.resize(model(pixels)[0], true.shape, method="bilinear")
        predicted = np.argmax(logits, axis=-1)
        keep = true != VOID
        np.add.at(confusion, (true[keep], predicted[keep]), 1)
    return confusion


@pytest.mark.slow
def test_the_saved_segmenter_carries_the_re_estimated_statistics_that_scored_it(segrun):
    run, root = segrun
    quick = ["segment.epochs=1", "segment.seed=6"]
    plain = evaluate_run(run.root, "segment", overrides=[*quick, "segment.precise_bn_batches=0"])
    precise = evaluate_run(run.root, "segment", data=plain["data"] + "/", overrides=quick)
    plain_model = load_model(plain["model"])
    precise_model = load_model(precise["model"])
    # The same training, so the same trainable weights; other BatchNorm statistics, which
    # the saved model keeps: it gives the confusion matrix its result reports.
    moved = []
    for mine, theirs in zip(precise_model.weights, plain_model.weights, strict=True):
        if "moving" in mine.path:
            moved.append(not np.allclose(mine, theirs, rtol=1e-3))
        else:
            np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=1e-6, err_msg=mine.path)
    assert moved and all(moved)
    for result, model in ((plain, plain_model), (precise, precise_model)):
        np.testing.assert_array_equal(_test_confusion(model, root), result["confusion_matrix"])


@pytest.mark.slow
def test_random_baseline_and_a_frozen_backbone(segrun):
    run, _ = segrun
    result = evaluate_run(run.root, "segment", baseline="random")
    assert result["backbone"] == "random_init" and result["n_train"] == 3
    assert (run.eval_dir / "segment-random.json").is_file()
    frozen = evaluate_run(
        run.root,
        "segment",
        data=result["data"] + "/",  # another spelling: its own file
        overrides=["segment.freeze_backbone=true", "segment.epochs=1"],
    )
    assert frozen["parameters"]["freeze_backbone"] is True
    # Frozen: the fine-tuned model's backbone weights are the run's, unchanged.
    model = load_model(frozen["model"])
    pretrained = load_model(run.backbone_path)
    weights = {w.path: np.asarray(w) for w in pretrained.weights}
    pyramid = model.get_layer("tiny_pyramid").weights
    assert pyramid and all(np.array_equal(w, weights[w.path]) for w in pyramid)
    assert "@segfolder" in frozen["model"]


def _error_line(capsys, argv):
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("byol-keras: error: ")
    return lines[0]


def test_a_bad_class_index_exits_2_with_one_line_naming_file_and_value(tmp_path, capsys):
    root = make_segfolder(tmp_path / "data")
    mask = np.zeros((24, 32))
    mask[5, 5] = 9
    write_pair(root, "test", "odd", mask)
    run = make_run(tmp_path / "run", _config(root))
    line = _error_line(capsys, ["evaluate", "--run", str(run.root), "--protocol", "segment"])
    assert "odd.png" in line and "value 9" in line


def test_reporting_on_pretraining_images_is_refused(tmp_path, capsys):
    root = make_segfolder(tmp_path / "data")
    run = make_run(tmp_path / "run", _config(root, split="train+test"))
    line = _error_line(capsys, ["evaluate", "--run", str(run.root), "--protocol", "segment"])
    assert "3 of the 3 test images were pretraining images" in line
    line = _error_line(
        capsys,
        ["evaluate", "--run", str(run.root), "--protocol", "segment", "--data", "digits"],
    )
    assert "needs a segfolder:<path> source" in line


@pytest.mark.slow
def test_segmentation_picture_shows_the_class_colours_of_the_true_masks(segrun, tmp_path):
    from PIL import Image

    from byol_keras.evaluation.pictures import visualize_run
    from byol_keras.transfer.colours import class_colours

    run, root = segrun
    evaluate_run(run.root, "segment", label_fraction=0.5)  # idempotent: same file, same model
    (path,) = visualize_run(
        run.root, "segmentation", output=tmp_path / "seg.png", segmenter="segment-50pct"
    )
    pixels = np.asarray(Image.open(path).convert("RGB")).reshape(-1, 3).astype(int)
    mask = np.asarray(Image.open(root / "test/masks/test0.png"))
    for index in np.unique(mask[mask != VOID]):
        colour = np.round(class_colours(3)[index] * 255).astype(int)
        assert (np.abs(pixels - colour).max(axis=1) <= 1).sum() > 50, f"class {index} not drawn"


def test_segmentation_picture_without_a_result_names_what_to_run(tmp_path, capsys):
    root = make_segfolder(tmp_path / "data", splits=("test",))
    run = make_run(tmp_path / "run", _config(root))
    argv = ["visualize", "--run", str(run.root), "--kind", "segmentation"]
    assert "--protocol segment` first" in _error_line(capsys, argv)
    assert "--segmenter" in _error_line(capsys, [*argv, "--data", f"segfolder:{root}"])


def test_a_test_split_without_a_scored_pixel_still_writes_its_result(tmp_path, capsys):
    # Review defect 3: the summary line formatted mean_iou None and crashed after fine-tuning.
    root = make_segfolder(tmp_path / "data", splits=("train", "val"))
    for index in range(2):
        write_pair(root, "test", f"void{index}", np.full((24, 32), VOID))
    run = make_run(tmp_path / "run", _config(root, split="train"))
    code = main(["evaluate", "--run", str(run.root), "--protocol", "segment"])
    assert code == 0
    assert "mean IoU n/a (no scored test pixel)" in capsys.readouterr().out
    result = json.loads((run.eval_dir / "segment.json").read_text())
    assert result["mean_iou"] is None and result["labelled_pixels"] == 0


def test_a_missing_validation_split_blames_the_protocol_not_data_split(tmp_path, capsys):
    # Review defect 7: the protocol's own `val` split was reported as data.split's fault.
    root = make_segfolder(tmp_path / "data", splits=("train", "test"))
    run = make_run(tmp_path / "run", _config(root, split="train"))
    line = _error_line(capsys, ["evaluate", "--run", str(run.root), "--protocol", "segment"])
    assert "--protocol segment (it selects its model on split 'val')" in line
    assert "data.split" not in line and "splits found: test, train" in line


@pytest.mark.slow
def test_segment_seed_makes_the_fine_tune_reproducible_and_keeps_each_seed_apart(segrun):
    # segment.seed seeds the subset, the head's initialisation and the fine-tuning.
    run, _ = segrun
    quick = ["segment.epochs=1"]
    first = evaluate_run(
        run.root, "segment", label_fraction=0.5, overrides=[*quick, "segment.seed=3"]
    )
    again = evaluate_run(
        run.root, "segment", label_fraction=0.5, overrides=[*quick, "segment.seed=3"]
    )
    other = evaluate_run(
        run.root, "segment", label_fraction=0.5, overrides=[*quick, "segment.seed=4"]
    )
    assert first["parameters"]["seed"] == 3 and first["model"].endswith(
        "segment-50pct-seed3/model.keras"
    )
    assert first["confusion_matrix"] == again["confusion_matrix"]
    assert first["val_curve"] == again["val_curve"]
    assert (run.eval_dir / "segment-50pct-seed3.json").is_file()
    assert (run.eval_dir / "segment-50pct-seed4.json").is_file()
    assert other["parameters"]["seed"] == 4


def test_the_kept_segmenter_carries_batchnorm_statistics_re_estimated_for_its_weights():
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (6, 16, 24, 3)).astype("float32")
    masks = rng.integers(0, 3, (6, 16, 24)).astype("uint8")
    keras.utils.set_random_seed(5)
    segmenter = build_segmenter(build_backbone("tiny", 16, width=4), 3, decoder_channels=4)
    augment = JointAugment((16, 24), (0.75, 1.5), 0.2)
    training = finetune_segmenter(
        segmenter,
        (images, masks),
        (images[:2], masks[:2]),
        augment,
        epochs=2,
        batch_size=2,
        learning_rate=1e-2,
        weight_decay=0.0,
        num_classes=3,
        ignore_index=VOID,
        seed=5,
        precise_bn_batches=3,
    )
    norms = [w for w in segmenter.non_trainable_weights if "moving" in w.path]
    kept = [np.asarray(w) for w in norms]
    # They are the average over the batches drawn when the kept weights were scored on val:
    # batches 3(e-1) to 3e of the same augmented stream for the kept epoch e.
    keras.utils.set_random_seed(5)
    stream = _training_batches(images, masks, augment, 2, VOID, 5).map(lambda x, *_: x)
    batches = list(stream.skip(3 * (training["best_epoch"] - 1)).take(3))
    assert PreciseBN(segmenter)(batches, 3) == 3
    for weight, value in zip(norms, kept, strict=True):
        np.testing.assert_allclose(weight, value, rtol=1e-5, atol=1e-6, err_msg=weight.path)
