"""What the dense transfer protocols share: result names, label subsets, refusals, model saving.

`--protocol segment` (segment.py) and `--protocol detect` (detect.py) both
fine-tune on a seeded subset of the train split, select on val, report on
test, and keep the fine-tuned model beside the result JSON.

```python
name = result_name("detect", 0.1, "random", seed=1)  # 'detect-10pct-random-seed1'
subset = seeded_subset(205, 0.1, seed=0)              # 20 sorted image indices
```
"""

import os
from pathlib import Path

import keras
import numpy as np

from byol_keras.errors import UsageError


def result_name(protocol: str, fraction: float, baseline: str | None, seed: int | None) -> str:
    """`detect`, `detect-10pct`, `detect-random`, `detect-10pct-random-seed1`.

    A set seed is in the name, so that one seed's result never replaces another's.

    ```python
    result_name("segment", 1.0, None, None)  # 'segment'
    ```
    """
    name = protocol if fraction == 1.0 else f"{protocol}-{fraction * 100:g}pct"
    name = f"{name}-random" if baseline == "random" else name
    return name if seed is None else f"{name}-seed{seed}"


def seeded_subset(count: int, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of a seeded random `fraction` of `count` items (at least one).

    ```python
    seeded_subset(10, 0.5, seed=3)  # five sorted indices, the same for seed 3 every time
    ```
    """
    size = min(count, max(1, round(fraction * count)))
    return np.sort(np.random.default_rng(seed).choice(count, size, replace=False))


def check_disjoint(splits: dict) -> None:
    """Refuses splits (name -> anything with `example_ids`) that share an image.

    ```python
    # doctest: raises UsageError
    from byol_keras.data.voc import load_voc

    train, test = load_voc("bccd", "train"), load_voc("bccd", "test")
    check_disjoint({"train": train, "test": test})  # fine: no image in both
    check_disjoint({"train": train, "train+test": load_voc("bccd", "train+test")})  # UsageError
    ```
    """
    names = list(splits)
    for index, first in enumerate(names):
        for second in names[index + 1 :]:
            shared = int(np.isin(splits[second].example_ids, splits[first].example_ids).sum())
            if shared:
                raise UsageError(
                    f"--data: {shared} images of the {second} split are also in the {first} "
                    "split; use separate splits"
                )


def refuse_pretraining_images(test_ids: np.ndarray, seen_ids: np.ndarray, pretraining: str) -> None:
    """Never report on images the backbone was pretrained on; `pretraining` names that data.

    ```python
    from byol_keras.data.voc import load_voc

    seen = load_voc("bccd", "train+val").example_ids  # what the run pretrained on
    test = load_voc("bccd", "test")
    refuse_pretraining_images(test.example_ids, seen, "voc:bccd split train+val")  # passes
    ```
    """
    shared = int(np.isin(test_ids, seen_ids).sum())
    if shared:
        raise UsageError(
            f"--data: {shared} of the {len(test_ids)} test images were pretraining images "
            f"({pretraining}); report on a split the run never saw"
        )


def save_model(model: keras.Model, path: Path) -> None:
    """Saves beside the destination and renames, so a crash never leaves half a model.

    ```python
    from byol_keras.runs import RunDirectory

    run = RunDirectory("runs/quickstart")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    save_model(model, run.eval_dir / "segment" / "model.keras")
    ```
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_name(".model-staging.keras")
    model.save(staged)
    os.replace(staged, path)
