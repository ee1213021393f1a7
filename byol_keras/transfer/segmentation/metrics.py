"""Semantic-segmentation figures from one confusion matrix accumulated over a whole split.

Per-class IoU = TP / (TP + FP + FN), mean IoU over the classes, and global
pixel accuracy = correct pixels / labelled pixels, all from the sum of the
split's pixels; pixels whose true class is the ignore index (CamVid's void)
count nowhere. Averaging per-image or per-batch IoUs would weight a small
image's classes like a large one's and is not the metric.

```python
class_names = [str(index) for index in range(11)]
pairs = [(np.array([[0, 1], [2, 11]]), np.array([[0, 1], [1, 5]]))]  # (true, predicted) masks
confusion = np.zeros((11, 11), np.int64)
for true, predicted in pairs:
    confusion += confusion_matrix(true, predicted, num_classes=11, ignore_index=11)
scores = segmentation_scores(confusion, class_names)
scores["mean_iou"], scores["pixel_accuracy"]
```
"""

import numpy as np


def confusion_matrix(
    true: np.ndarray, predicted: np.ndarray, num_classes: int, ignore_index: int | None
) -> np.ndarray:
    """Pixel counts `[true class, predicted class]`, int64 `[C, C]`, void pixels left out.

    ```python
    confusion = confusion_matrix(np.array([0, 1, 11]), np.array([0, 0, 1]), 2, 11)
    assert confusion.tolist() == [[1, 0], [1, 0]]
    ```
    """
    true, predicted = np.asarray(true).ravel(), np.asarray(predicted).ravel()
    if true.shape != predicted.shape:
        raise ValueError(
            f"true and predicted masks differ in size: {true.size} != {predicted.size}"
        )
    keep = true != ignore_index if ignore_index is not None else np.ones(true.shape, bool)
    true, predicted = true[keep].astype(np.int64), predicted[keep].astype(np.int64)
    if true.size and (true.max() >= num_classes or predicted.max() >= num_classes):
        raise ValueError(f"class indices must lie in 0..{num_classes - 1}")
    counts = np.bincount(true * num_classes + predicted, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def segmentation_scores(confusion: np.ndarray, class_names: list[str]) -> dict:
    """Per-class IoU, mean IoU and global pixel accuracy of a confusion matrix.

    A class that is neither in the ground truth nor predicted has no IoU
    (None) and is left out of the mean.

    ```python
    segmentation_scores(np.array([[2, 1], [0, 1]]), ["road", "car"])
    # {"per_class_iou": {"road": 0.667, "car": 0.5}, "mean_iou": 0.583, "pixel_accuracy": 0.75}
    ```
    """
    confusion = np.asarray(confusion, np.float64)
    true_positive = np.diag(confusion)
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - true_positive
    present = union > 0
    iou = np.where(present, true_positive / np.maximum(union, 1), np.nan)
    total = confusion.sum()
    return {
        "per_class_iou": {
            name: (float(value) if ok else None)
            for name, value, ok in zip(class_names, iou, present, strict=True)
        },
        "mean_iou": float(np.mean(iou[present])) if present.any() else None,
        "pixel_accuracy": float(true_positive.sum() / total) if total else None,
        "labelled_pixels": int(total),
    }
