"""--protocol detect: the protocol end to end, its kept model, seeds, refusals, bad annotations.

The backbone is a ResNet-18 of width 16 with the ImageNet stem: RetinaNet
needs strides 8 to 32, and TF 2.21's oneDNN aborts ("double free") on the
weight gradient of a 1x1 stride-2 convolution with 8 or 12 input channels
on maps of about 36 px and more, which narrower ResNets would have.
"""

import json
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from byol_keras.builders import backbone_from_config
from byol_keras.cli import main
from byol_keras.config import from_dict, save_config
from byol_keras.data.box_sources import load_box_split
from byol_keras.evaluation import evaluate_run
from byol_keras.methods.byol import BYOL
from byol_keras.registration import load_model
from byol_keras.runs import RunDirectory
from byol_keras.transfer.detection import protocol as detect
from byol_keras.transfer.detection import training
from byol_keras.transfer.detection.metrics import Detections, detection_scores
from byol_keras.transfer.detection.prediction import predict_detections
from byol_keras.transfer.detection.preprocessor import prepare_split
from tests.helpers.boxes import Scene, random_scenes, write_coco, write_voc
from tests.helpers.broken_jpegs import BROKEN_KINDS, write_broken_jpegs
from tests.helpers.runs import make_run

SIZE = (64, 96)
DETECT = {
    "image_size": list(SIZE),
    "epochs": 2,
    "batch_size": 4,
    "lr": 1e-3,
    "anchor_sizes": [8, 16, 32, 64, 128],
    # Two epochs leave every score near the 0.01 prior: a low threshold keeps detections to rank.
    "score_threshold": 0.005,
    "max_detections": 20,
    "head_width": 16,
}


def _splits(seed=0):
    scenes = random_scenes(20, seed=seed)
    return {"train": scenes[:10], "val": scenes[10:15], "test": scenes[15:]}


def _config(source, split="train", backbone="resnet18"):
    return {
        "data": {"source": source, "split": split, "image_size": 32},
        "model": {"backbone": backbone, "stem": "imagenet", "width": 16, "projection_dim": 8},
        "train": {"epochs": 1, "batch_size": 2},
        "detect": DETECT,
    }


def make_detect_run(root, config) -> RunDirectory:
    """A finished run whose backbone comes from the config (`make_run` builds `tiny` only)."""
    keras.utils.set_random_seed(1)
    run = RunDirectory(root).create()
    parsed = from_dict(config)
    save_config(parsed, run.config_path)
    backbone = backbone_from_config(parsed)
    model = BYOL(backbone, projection_dim=8, projector_hidden_dim=16, predictor_hidden_dim=16)
    model.save(run.model_path)
    backbone.save(run.backbone_path)
    run.finish({"epochs": 1})
    return run


@pytest.fixture(autouse=True, scope="module")
def few_steps():
    """Two steps an epoch instead of ten: the tests check the protocol, not the detector."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(training, "MIN_STEPS_PER_EPOCH", 2)
        yield


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory):
    return write_voc(tmp_path_factory.mktemp("voc"), _splits())


@pytest.fixture(scope="module")
def detect_run(tmp_path_factory, voc_root):
    return make_detect_run(tmp_path_factory.mktemp("run"), _config(f"voc:{voc_root}"))


def _letterboxed(path):
    """The test's own letterbox: fit inside SIZE keeping the aspect, pad bottom and right."""
    pixels = np.asarray(Image.open(path).convert("RGB"))
    height, width = pixels.shape[:2]
    factor = min(SIZE[0] / height, SIZE[1] / width)
    new_height, new_width = round(height * factor), round(width * factor)
    resized = tf.image.resize(pixels[None] / 255.0, (new_height, new_width), method="bilinear")
    padded = np.zeros((1, *SIZE, 3), np.float32)
    padded[0, :new_height, :new_width] = resized[0]
    return padded, (new_height / height, new_width / width), (height, width)


@pytest.mark.slow  # a fine-tune: 20-40 s on the shared CPU
def test_detect_protocol_writes_its_result_and_a_model_that_reproduces_it(
    detect_run, voc_root, capsys
):
    run = detect_run
    argv = ["evaluate", "--run", str(run.root), "--protocol", "detect", "--label-fraction", "0.5"]
    assert main(argv) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("detect (pretrained)") and "detect-50pct.json" in line
    result = json.loads((run.eval_dir / "detect-50pct.json").read_text())
    assert result["n_train"] == 5 and result["n_train_available"] == 10 and result["n_test"] == 5
    assert result["skipped_files"] == {"train": 0, "val": 0, "test": 0}
    assert result["skipped_boxes"] == {"train": 0, "val": 0, "test": 0}
    assert set(result["per_class_ap50"]) == {"cat", "dog", "fish"}
    assert result["parameters"]["epochs"] == 2 and result["wall_time_seconds"] > 0
    assert result["parameters"]["image_size"] == list(SIZE)
    assert len(result["val_curve"]) == 2 and 1 <= result["best_epoch"] <= 2
    assert result["val_ap50"] == max(point["val_ap50"] for point in result["val_curve"])
    # The kept model, reloaded, on images letterboxed here, gives the recorded figures.
    model = load_model(run.eval_dir / "detect-50pct" / "model.keras")
    assert model.box_head.width == model.classification_head.width == DETECT["head_width"]
    truth = load_box_split(f"voc:{voc_root}", "test")
    predictions = []
    for path in truth.paths:
        image, (scale_y, scale_x), (height, width) = _letterboxed(path)
        outputs = model.predict(image, verbose=0)
        count = int(outputs["num_detections"][0])
        assert 0 < count <= DETECT["max_detections"]
        assert outputs["confidence"][0, :count].min() >= DETECT["score_threshold"]
        boxes = outputs["boxes"][0, :count] / [scale_x, scale_y, scale_x, scale_y]
        boxes = np.clip(boxes, 0, [width, height, width, height])
        kept = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])  # not all padding
        scores, classes = outputs["confidence"][0, :count], outputs["classes"][0, :count]
        predictions.append(Detections(boxes[kept], scores[kept], classes[kept]))
    scores = detection_scores(truth, predictions)
    for figure in ("ap", "ap50", "ap75"):
        assert scores[figure] == pytest.approx(result[figure], abs=1e-6), figure
    assert scores["per_class_ap50"] == pytest.approx(result["per_class_ap50"], abs=1e-6)


@pytest.mark.slow  # a fine-tune: 20-40 s on the shared CPU
def test_detect_seed_reproduces_a_fine_tune_and_keeps_each_seed_apart(detect_run):
    quick = ["detect.epochs=1"]
    first = evaluate_run(detect_run.root, "detect", overrides=[*quick, "detect.seed=3"])
    again = evaluate_run(detect_run.root, "detect", overrides=[*quick, "detect.seed=3"])
    other = evaluate_run(detect_run.root, "detect", overrides=[*quick, "detect.seed=4"])
    assert first["parameters"]["seed"] == 3 and other["parameters"]["seed"] == 4
    assert first["model"].endswith("detect-seed3/model.keras")
    # Within one process the first fine-tune's gradients differ from later ones' in the 6th
    # digit (TF 2.21 on this CPU, with or without op determinism); across processes, where
    # the CLI runs one fine-tune each, they are equal (the slow test below).
    loss, loss_again = first["val_curve"][0]["loss"], again["val_curve"][0]["loss"]
    assert loss_again == pytest.approx(loss, rel=1e-4)
    # Another seed: other heads, other augmentation, another loss.
    assert abs(other["val_curve"][0]["loss"] - loss) > 1e-2
    assert (detect_run.eval_dir / "detect-seed3.json").is_file()
    assert (detect_run.eval_dir / "detect-seed4.json").is_file()


@pytest.mark.slow
def test_a_seeded_fine_tune_gives_the_same_result_in_two_processes(detect_run):
    argv = [sys.executable, "-m", "byol_keras", "evaluate", "--run", str(detect_run.root)]
    argv += ["--protocol", "detect", "--set", "detect.epochs=1", "detect.seed=5"]
    results = []
    for _ in range(2):
        subprocess.run(argv, check=True, capture_output=True)
        results.append(json.loads((detect_run.eval_dir / "detect-seed5.json").read_text()))
    first, again = results
    assert first["val_curve"] == again["val_curve"]
    for figure in ("ap", "ap50", "ap75", "per_class_ap50"):
        assert first[figure] == again[figure], figure


@pytest.mark.slow  # a fine-tune: 20-40 s on the shared CPU
def test_random_baseline_gets_its_own_file(detect_run):
    result = evaluate_run(
        detect_run.root, "detect", baseline="random", overrides=["detect.epochs=1"]
    )
    assert result["backbone"] == "random_init" and result["n_train"] == 10
    saved = json.loads((detect_run.eval_dir / "detect-random.json").read_text())
    assert saved["backbone"] == "random_init" and saved["ap50"] == result["ap50"]
    assert (detect_run.eval_dir / "detect-random" / "model.keras").is_file()


def _error_line(capsys, argv):
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("byol-keras: error: "), lines
    return lines[0]


def test_refusals_exit_2_with_one_line(tmp_path, voc_root, detect_run, capsys):
    evaluate = ["evaluate", "--protocol", "detect", "--run"]
    seen = make_detect_run(tmp_path / "seen", _config(f"voc:{voc_root}", split="train+test"))
    line = _error_line(capsys, [*evaluate, str(seen.root)])
    assert "5 of the 5 test images were pretraining images" in line
    line = _error_line(capsys, [*evaluate, str(detect_run.root), "--data", "digits"])
    assert "needs a voc:<path> or coco:<path> source" in line
    line = _error_line(
        capsys, [*evaluate, str(detect_run.root), "--set", "detect.image_size=[60,96]"]
    )
    assert "detect.image_size" in line and "multiples of 32" in line
    digits = make_detect_run(tmp_path / "digits", _config("digits"))
    line = _error_line(capsys, [*evaluate, str(digits.root)])
    assert "was not pretrained on a voc: or coco: source" in line
    tiny = make_run(
        tmp_path / "tiny", {**_config(f"voc:{voc_root}"), "model": {"backbone": "tiny", "width": 4}}
    )
    line = _error_line(capsys, [*evaluate, str(tiny.root)])
    assert "RetinaNet needs strides 8, 16 and 32" in line


def _two_classes(prefix: str, count: int) -> list[Scene]:
    return [
        Scene(f"{prefix}{i}", 48, 64, [[4, 4, 20, 20, i % 2, False], [30, 10, 50, 40, 1, False]])
        for i in range(count)
    ]


def test_coco_splits_that_list_only_their_own_classes_are_matched_by_name(tmp_path, monkeypatch):
    """Train and val declare {10: cat, 20: dog}, test {10: dog}: a perfect detector scores 1."""
    root = write_coco(
        tmp_path / "coco",
        {"train": _two_classes("a", 4), "val": _two_classes("b", 2)},
        ["cat", "dog"],
    )
    test = [Scene(f"c{i}", 48, 64, [[4 + i, 6, 30, 30, 0, False]]) for i in range(3)]
    write_coco(root, {"test": test}, ["dog"])
    run = make_detect_run(tmp_path / "run", _config(f"coco:{root}"))
    trained = {}

    def no_finetune(detector, train, val, **_):
        trained["names"] = train.truth.class_names
        return {
            "best_epoch": 1,
            "val_ap50": 1.0,
            "val_curve": [],
            "steps": 0,
            "steps_per_epoch": 0,
            "batch_size": 2,
        }

    def perfect(detector, prepared, batch_size):
        """The true boxes of each test image, as the class the detector was trained on: dog."""
        scenes = {scene.name: scene for scene in test}
        dog = trained["names"].index("dog")
        return [
            Detections(
                np.array([box[:4] for box in scenes[Path(path).stem].boxes], np.float32),
                np.ones(1, np.float32),
                np.array([dog]),
            )
            for path in prepared.truth.paths
        ]

    monkeypatch.setattr(detect, "finetune_detector", no_finetune)
    monkeypatch.setattr(detect, "predict_detections", perfect)
    result = evaluate_run(run.root, "detect")
    assert result["class_names"] == ["cat", "dog"]
    assert result["ap50"] == 1.0 and result["per_class_ap50"] == {"cat": None, "dog": 1.0}
    # Read again for the picture and the export: its dog boxes are the result's class 1.
    assert [c.tolist() for c in detect.result_test_split(result).classes] == [[1], [1], [1]]


@pytest.mark.parametrize("data", ["coco", "voc"])
def test_a_test_class_train_never_had_is_refused_with_one_line(tmp_path, data, capsys):
    splits = {"train": _two_classes("a", 4), "val": _two_classes("b", 2)}
    test = [Scene("c0", 48, 64, [[4, 6, 30, 30, 2, False]])]  # fish
    if data == "coco":  # test declares only its own class, under an id that train uses for cat
        root = write_coco(tmp_path / "coco", splits, ["cat", "dog"])
        write_coco(root, {"test": [Scene("c0", 48, 64, [[4, 6, 30, 30, 0, False]])]}, ["fish"])
    else:  # fish is among the classes of the tree, but no train box is a fish
        root = write_voc(tmp_path / "voc", {**splits, "test": test})
    run = make_detect_run(tmp_path / "run", _config(f"{data}:{root}"))
    line = _error_line(capsys, ["evaluate", "--protocol", "detect", "--run", str(run.root)])
    assert "the test split has" in line and line.endswith(": fish")


def test_broken_jpegs_in_a_voc_split_are_skipped_before_detect_decodes_them(tmp_path):
    scenes = random_scenes(2) + [
        Scene(kind, 40, 60, [[2, 2, 20, 20, 0, False]]) for kind in BROKEN_KINDS
    ]
    root = write_voc(tmp_path, {"train": scenes})
    write_broken_jpegs(root / "JPEGImages")
    split = load_box_split(f"voc:{root}", "train")
    assert (split.names, split.skipped_files) == ([s.name for s in scenes[:2]], 3)
    prepared = prepare_split(split, SIZE, as_uint8=True)  # the decode detect runs
    assert prepared.images.shape == (2, *SIZE, 3)


@pytest.mark.slow  # a fine-tune: 20-40 s on the shared CPU
def test_bad_annotations_are_skipped_and_counted_in_the_result(tmp_path):
    splits = _splits(seed=2)
    splits["train"] += [
        Scene("broken_xml", 40, 60, [[2, 2, 20, 20, 0, False]]),
        Scene("no_image", 40, 60, [[2, 2, 20, 20, 0, False]]),
        Scene("degenerate", 40, 60, [[2, 2, 20, 20, 1, False], [10, 10, 10, 30, 1, False]]),
    ]
    splits["test"] += [
        Scene("outside", 40, 60, [[2, 2, 20, 20, 1, False], [70, 5, 90, 20, 0, False]])
    ]
    splits["train"] += [Scene(kind, 40, 60, [[2, 2, 20, 20, 0, False]]) for kind in BROKEN_KINDS]
    root = write_voc(tmp_path / "voc", splits)
    (root / "Annotations" / "broken_xml.xml").write_text("<annotation><object><name>cat")
    (root / "JPEGImages" / "no_image.jpg").unlink()
    write_broken_jpegs(root / "JPEGImages")
    run = make_detect_run(tmp_path / "run", _config(f"voc:{root}"))
    result = evaluate_run(run.root, "detect", overrides=["detect.epochs=1"])
    assert result["skipped_files"] == {"train": 5, "val": 0, "test": 0}
    assert result["skipped_boxes"] == {"train": 1, "val": 0, "test": 1}
    assert result["n_train"] == 11 and result["n_test"] == 6
    kept = sum(len(s.boxes) for s in splits["test"]) - 1
    assert result["n_test_boxes"] == kept


@pytest.mark.slow  # a fine-tune: 20-40 s on the shared CPU
def test_the_same_scenes_as_voc_and_as_coco_give_the_same_ap(detect_run, tmp_path):
    """The kept detector scores the COCO tree of the same scenes exactly as the VOC tree."""
    coco = write_coco(tmp_path / "coco", _splits())
    result = evaluate_run(detect_run.root, "detect", overrides=["detect.epochs=1"])
    model = load_model(result["model"])
    for spec in (result["data"], f"coco:{coco}"):
        test = load_box_split(spec, "test")
        predicted = predict_detections(model, prepare_split(test, SIZE), 4)
        scores = detection_scores(test, predicted)
        for figure in ("ap", "ap50", "ap75", "per_class_ap50"):
            assert scores[figure] == result[figure], (spec, figure)


@pytest.mark.slow  # a fine-tune: 20-40 s on the shared CPU
def test_detection_picture_draws_the_true_boxes_in_their_class_colours(detect_run, tmp_path):
    from PIL import Image

    from byol_keras.evaluation.pictures import visualize_run
    from byol_keras.transfer.colours import class_colours

    # After one epoch every score is near the 0.01 prior: at 0.5 no prediction is drawn, so
    # each class colour in the picture comes from a true box.
    overrides = ["detect.epochs=1", "detect.seed=7", "detect.score_threshold=0.5"]
    result = evaluate_run(detect_run.root, "detect", overrides=overrides)
    (path,) = visualize_run(
        detect_run.root, "detection", output=tmp_path / "boxes.png", detector="detect-seed7"
    )
    pixels = np.asarray(Image.open(path).convert("RGB")).reshape(-1, 3).astype(int)
    test = _splits()["test"]
    chosen = np.linspace(0, len(test) - 1, 4).round().astype(int)  # the picture's choice
    drawn = {box[4] for index in chosen for box in test[index].boxes}
    for index in range(3):
        colour = np.round(class_colours(3)[index] * 255).astype(int)
        near = (np.abs(pixels - colour).max(axis=1) <= 8).sum()
        # The legend shows every colour once (a short line); true boxes add their outlines.
        assert (near > 150) == (index in drawn), (index, near, drawn)
    assert result["parameters"]["score_threshold"] == 0.5


def test_detection_picture_without_a_result_names_what_to_run(tmp_path, voc_root, capsys):
    run = make_detect_run(tmp_path / "run", _config(f"voc:{voc_root}"))
    argv = ["visualize", "--run", str(run.root), "--kind", "detection"]
    assert "--protocol detect` first" in _error_line(capsys, argv)
    assert "--detector" in _error_line(capsys, [*argv, "--data", f"voc:{voc_root}"])


@pytest.mark.slow  # a fine-tune: 20-40 s on the shared CPU
def test_a_frozen_backbone_keeps_the_run_weights(detect_run):
    result = evaluate_run(
        detect_run.root,
        "detect",
        overrides=["detect.freeze_backbone=true", "detect.epochs=1", "detect.seed=8"],
    )
    assert result["parameters"]["freeze_backbone"] is True
    model = load_model(result["model"])
    pretrained = load_model(detect_run.backbone_path)
    weights = {w.path: np.asarray(w) for w in pretrained.weights}
    backbone = [w for w in model.weights if w.path in weights]
    assert len(backbone) == len(weights)
    assert all(np.array_equal(w, weights[w.path]) for w in backbone)
    # The heads did train: their weights left the initial prior.
    head = model.classification_head.prediction_layer.bias
    assert not np.allclose(np.asarray(head), -np.log(99))
