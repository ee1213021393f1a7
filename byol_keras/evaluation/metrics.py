"""Accuracy figures shared by every protocol: top-k and per-class accuracy."""

import numpy as np


def top_k_accuracy(scores: np.ndarray, labels: np.ndarray, k: int = 1) -> float:
    """The fraction of rows whose true label is among the `k` highest scores.

    Ties are broken towards the lower class index, as `argmax` does.

    ```python
    assert top_k_accuracy(np.array([[0.1, 0.9], [0.8, 0.2]]), np.array([1, 1])) == 0.5
    ```
    """
    scores, labels = np.asarray(scores), np.asarray(labels)
    if len(scores) == 0:
        raise ValueError("no examples to score")
    # A stable sort of the negated scores keeps the lower index first among equals.
    ranked = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return float(np.mean(np.any(ranked == labels[:, None], axis=1)))


def per_class_accuracy(
    predictions: np.ndarray, labels: np.ndarray, class_names: list[str]
) -> dict[str, float | None]:
    """Top-1 accuracy of every class by name; None for a class with no test examples.

    ```python
    accuracy = per_class_accuracy(np.array([0, 1, 1]), np.array([0, 1, 0]), ["a", "b"])
    assert accuracy == {"a": 0.5, "b": 1.0}
    ```
    """
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    result = {}
    for index, name in enumerate(class_names):
        mask = labels == index
        result[name] = float(np.mean(predictions[mask] == index)) if mask.any() else None
    return result
