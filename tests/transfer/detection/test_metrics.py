"""Detection metrics: pycocotools' figures against hand computation, and VOC against COCO."""

import contextlib
import io

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from byol_keras.data.coco import load_coco
from byol_keras.data.voc import load_voc
from byol_keras.transfer.detection.metrics import Detections, _ground_truth, detection_scores
from tests.helpers.boxes import Scene, random_scenes, write_coco, write_voc


def _detections(boxes, scores, classes) -> Detections:
    return Detections(
        np.array(boxes, np.float32).reshape(-1, 4), np.array(scores), np.array(classes, int)
    )


def test_one_perfect_box_and_one_missed_box_by_hand(tmp_path):
    # Two small true boxes (20x20 = 400 px < 32²) of one class; one found exactly.
    scene = Scene("two", 100, 100, [[10, 10, 30, 30, 0, False], [60, 60, 80, 80, 0, False]])
    split = load_voc(str(write_voc(tmp_path, {"test": [scene]})), "test")
    scores = detection_scores(split, [_detections([[10, 10, 30, 30]], [0.9], [0])])
    # COCO interpolates precision at the 101 recall levels 0, 0.01, ..., 1: it is 1 up to
    # recall 0.5 (51 levels, 0.00..0.50) and 0 beyond, at every IoU threshold.
    by_hand = 51 / 101
    for key in ("ap", "ap50", "ap75", "ap_small"):
        assert scores[key] == pytest.approx(by_hand)
    assert scores["ap_medium"] is None and scores["ap_large"] is None  # no such true boxes
    assert scores["per_class_ap50"] == {"cat": pytest.approx(by_hand)}


def test_a_box_shifted_past_iou_075_counts_at_050_only(tmp_path):
    scene = Scene("one", 100, 100, [[0, 0, 40, 40, 0, False]])
    split = load_voc(str(write_voc(tmp_path, {"test": [scene]})), "test")
    # Shifted by 6 px: IoU = 34*40 / (2*1600 - 34*40) = 1360/1840 = 0.739, in [0.70, 0.75).
    scores = detection_scores(split, [_detections([[6, 0, 46, 40]], [0.8], [0])])
    assert scores["ap50"] == pytest.approx(1.0) and scores["ap75"] == 0.0
    # Hit at the thresholds 0.50, 0.55, ..., 0.70 (5 of 10): ap = 5/10.
    assert scores["ap"] == pytest.approx(0.5)
    assert scores["ap_large"] is None and scores["ap_medium"] == pytest.approx(0.5)


def test_difficult_boxes_are_neither_hits_nor_misses(tmp_path):
    scene = Scene("d", 100, 100, [[10, 10, 30, 30, 0, False], [60, 60, 90, 90, 0, True]])
    split = load_voc(str(write_voc(tmp_path, {"test": [scene]})), "test")
    found = _detections([[10, 10, 30, 30]], [0.9], [0])
    both = _detections([[10, 10, 30, 30], [60, 60, 90, 90]], [0.9, 0.95], [0, 0])
    for prediction in (found, both):
        assert detection_scores(split, [prediction])["ap50"] == pytest.approx(1.0)


def test_no_predictions_score_zero_and_classes_without_truth_none(tmp_path):
    scene = Scene("z", 50, 50, [[5, 5, 25, 25, 0, False], [5, 5, 15, 15, 2, False]])
    other = Scene("y", 50, 50, [[5, 5, 25, 25, 1, False]])
    root = write_voc(tmp_path, {"test": [scene], "train": [other]})
    split = load_voc(str(root), "test")
    assert split.class_names == ["cat", "dog", "fish"]
    scores = detection_scores(split, [_detections([], [], [])])
    assert scores["ap"] == 0.0 and scores["ap50"] == 0.0
    assert scores["per_class_ap50"] == {"cat": 0.0, "dog": None, "fish": 0.0}


def _noisy_predictions(split, seed=0) -> list[Detections]:
    """The true boxes jittered, a class sometimes wrong, plus a false alarm per image."""
    rng = np.random.default_rng(seed)
    predictions = []
    for boxes, classes, size in zip(split.boxes, split.classes, split.sizes, strict=True):
        jittered = boxes + rng.normal(0, 2.0, boxes.shape)
        wrong = rng.random(len(classes)) < 0.2
        labels = np.where(wrong, (classes + 1) % 3, classes)
        alarm = [[0, 0, size[1] / 3, size[0] / 3]]
        predictions.append(
            _detections(
                np.concatenate([jittered, alarm]),
                rng.random(len(classes) + 1),
                np.concatenate([labels, [int(rng.integers(0, 3))]]),
            )
        )
    return predictions


def test_voc_and_coco_trees_of_the_same_scenes_give_the_same_ap(tmp_path):
    scenes = random_scenes(12, seed=3)
    voc = load_voc(str(write_voc(tmp_path / "voc", {"test": scenes})), "test")
    coco = load_coco(str(write_coco(tmp_path / "coco", {"test": scenes})), "test")
    predictions = _noisy_predictions(voc)
    from_voc, from_coco = detection_scores(voc, predictions), detection_scores(coco, predictions)
    assert from_voc == from_coco
    assert 0.1 < from_voc["ap50"] < 0.95  # neither trivial nor perfect


def test_per_class_ap50_is_pycocotools_on_that_class_alone(tmp_path):
    scenes = random_scenes(12, seed=4)
    split = load_voc(str(write_voc(tmp_path, {"test": scenes})), "test")
    predictions = _noisy_predictions(split, seed=1)
    scores = detection_scores(split, predictions)
    results = [
        {
            "image_id": i,
            "category_id": int(k) + 1,
            "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])],
            "score": float(s),
        }
        for i, p in enumerate(predictions)
        for b, s, k in zip(p.boxes, p.scores, p.classes, strict=True)
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO()
        truth.dataset = _ground_truth(split)
        truth.createIndex()
        for k, name in enumerate(split.class_names):
            evaluation = COCOeval(truth, truth.loadRes(results), "bbox")
            evaluation.params.catIds = [k + 1]
            evaluation.evaluate()
            evaluation.accumulate()
            evaluation.summarize()
            assert scores["per_class_ap50"][name] == pytest.approx(evaluation.stats[1])
