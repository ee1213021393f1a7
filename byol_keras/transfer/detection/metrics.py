"""Detection figures computed by pycocotools, the reference implementation of COCO's metric.

The true boxes of a `BoxSplit` and the predicted boxes, both in the original
images' pixels as `[x0, y0, x1, y1]`, become in-memory COCO objects, and
`COCOeval` scores them: mean AP over IoU 0.50:0.95 (`ap`), at 0.50 (`ap50`)
and 0.75 (`ap75`), by box area (`ap_small` < 32², `ap_medium`, `ap_large`
> 96²; None where the split has no true box of that size, pycocotools' -1),
and AP at IoU 0.5 per class, read from the same evaluation's precision table
as detectron2 does. Nothing here re-derives the metric.

`difficult` boxes (VOC `<difficult>`, COCO `iscrowd`) go to pycocotools as
`iscrowd`: a prediction on one is neither a hit nor a false alarm. That is
COCO's rule for crowds (overlap measured as the prediction's share inside the
box), close to but not exactly VOC's rule for difficult boxes.

```python
from byol_keras.data.voc import load_voc

test_split = load_voc("bccd", "test")
outputs = [(boxes, np.ones(len(boxes)), classes)  # a perfect detector
           for boxes, classes in zip(test_split.boxes, test_split.classes)]
predictions = [Detections(boxes, scores, classes) for boxes, scores, classes in outputs]
scores = detection_scores(test_split, predictions)  # test_split: a BoxSplit
assert scores["ap50"] == 1.0  # a trained detector on BCCD: 0.61, say
scores["per_class_ap50"]  # {'Platelets': 1.0, 'RBC': 1.0, 'WBC': 1.0}
```
"""

import contextlib
import io
from typing import NamedTuple

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from byol_keras.data.boxes import BoxSplit

# COCOeval.stats: the figures of summarize(), in its order.
_STATS = ("ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large")


class Detections(NamedTuple):
    """One image's predictions in its original pixels.

    Args:
        boxes: `[m, 4]` as `[x0, y0, x1, y1]`.
        scores: `[m]` confidences.
        classes: `[m]` class indices into the split's `class_names`.

    ```python
    Detections(np.array([[10.0, 10.0, 30.0, 30.0]]), np.array([0.9]), np.array([0]))
    ```
    """

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray


def detection_scores(truth: BoxSplit, predictions: list[Detections]) -> dict:
    """COCO AP figures of `predictions` (one `Detections` per image of `truth`, in its order).

    COCO's rule of at most 100 detections per image, the highest scores
    first, applies (pycocotools' `summarize` reads `ap` at 100 whatever
    `maxDets` says).

    ```python
    from byol_keras.data.voc import load_voc

    split = load_voc("bccd", "test")
    nothing = Detections(np.zeros([0, 4]), np.zeros([0]), np.zeros([0], int))
    assert detection_scores(split, [nothing] * len(split))["ap50"] == 0.0
    ```
    """
    if len(predictions) != len(truth):
        raise ValueError(f"{len(predictions)} predictions for {len(truth)} images")
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints as it goes
        ground_truth = COCO()
        ground_truth.dataset = _ground_truth(truth)
        ground_truth.createIndex()
        results = _results(predictions)
        if results:
            predicted = ground_truth.loadRes(results)
        else:  # loadRes cannot take an empty list; an empty result set scores 0
            predicted = COCO()
            predicted.dataset = {**ground_truth.dataset, "annotations": []}
            predicted.createIndex()
        evaluation = COCOeval(ground_truth, predicted, "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    scores = {name: _figure(value) for name, value in zip(_STATS, evaluation.stats, strict=False)}
    # precision: [IoU threshold, recall, class, area range, max detections]; -1 marks no data.
    at_50 = evaluation.eval["precision"][0, :, :, 0, -1]
    scores["per_class_ap50"] = {
        name: _figure(np.mean(column[column > -1])) if np.any(column > -1) else None
        for name, column in zip(truth.class_names, at_50.T, strict=True)
    }
    return scores


def _ground_truth(truth: BoxSplit) -> dict:
    annotations = []
    for image_index, (boxes, classes, difficult) in enumerate(
        zip(truth.boxes, truth.classes, truth.difficult, strict=True)
    ):
        for box, label, crowd in zip(boxes, classes, difficult, strict=True):
            x0, y0, x1, y1 = (float(value) for value in box)
            annotations.append(
                {
                    # COCOeval marks a match by the true box's id, so 0 would read as no match.
                    "id": len(annotations) + 1,
                    "image_id": image_index,
                    "category_id": int(label) + 1,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": (x1 - x0) * (y1 - y0),
                    "iscrowd": int(crowd),
                }
            )
    return {
        "images": [
            {"id": index, "height": int(height), "width": int(width)}
            for index, (height, width) in enumerate(truth.sizes)
        ],
        "categories": [{"id": k + 1, "name": name} for k, name in enumerate(truth.class_names)],
        "annotations": annotations,
    }


def _results(predictions: list[Detections]) -> list[dict]:
    """Predicted boxes in COCO's result format, `[x, y, w, h]`."""
    results = []
    for image_index, (boxes, scores, classes) in enumerate(predictions):
        for box, score, label in zip(
            np.asarray(boxes, np.float64).reshape(-1, 4),
            np.asarray(scores, np.float64).ravel(),
            np.asarray(classes).ravel(),
            strict=True,
        ):
            x0, y0, x1, y1 = (float(value) for value in box)
            results.append(
                {
                    "image_id": image_index,
                    "category_id": int(label) + 1,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "score": float(score),
                }
            )
    return results


def _figure(value: float) -> float | None:
    value = float(value)
    return None if value < 0 else value
