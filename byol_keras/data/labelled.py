"""Guards for a labelled train/test pair: no shared examples, and test classes that train knows.

Evaluation and the kNN monitor both fit on one split and score another; a
test example that is also a training example, or a test class that the
training split lacks, makes the accuracy silently wrong.

```python
train_source = load_source("digits", split="train")
test_source = load_source("digits", split="test")
check_disjoint(train_source, test_source, "--data")  # raises UsageError if they share images
check_classes(np.array([0, 1, 2]), np.array([2, 1]), ["0", "1", "2"], "--data")
```
"""

import logging

import numpy as np

from byol_keras.data.source import ImageSource
from byol_keras.errors import UsageError

log = logging.getLogger(__name__)


def check_disjoint(train: ImageSource, test: ImageSource, flag: str) -> None:
    """Raises `UsageError` when any test example is also a training example.

    Examples are compared by identity (resolved file path, array and index,
    or absolute tfds index), so `digits:all` against `digits:test`, `train`
    against `train[:10%]` and a folder without split folders are all caught.
    """
    shared = train.shared_examples(test)
    if shared:
        raise UsageError(
            f"{flag}: {shared} of the {test.num_examples} test examples ({test.description}) "
            f"are also training examples ({train.description}); use separate splits"
        )


def check_classes(
    train_labels: np.ndarray, test_labels: np.ndarray, class_names: list[str] | None, flag: str
) -> None:
    """Raises `UsageError` for test classes absent from training; logs training-only classes.

    A test class without training examples can never be predicted, so its
    examples count as errors that no representation could avoid.
    """

    def name(index: int) -> str:
        return class_names[index] if class_names and index < len(class_names) else str(index)

    train_classes = set(np.unique(train_labels).tolist())
    test_classes = set(np.unique(test_labels).tolist())
    unknown = sorted(test_classes - train_classes)
    if unknown:
        names = ", ".join(name(index) for index in unknown[:5])
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        raise UsageError(
            f"{flag}: the test split has classes with no training examples: {names}{more}"
        )
    missing = sorted(train_classes - test_classes)
    if missing:
        log.warning(
            "%s: %d class(es) have training examples but none in the test split (%s); "
            "their per-class figures are null",
            flag,
            len(missing),
            ", ".join(name(index) for index in missing[:5]),
        )
