"""The skeleton every dense transfer protocol shares, and its parts: result names, label
subsets, refusals, model saving.

`--protocol segment` (segmentation/protocol.py) and `--protocol detect`
(detection/protocol.py) both fine-tune on a seeded subset of the train
split, select on val, report on test, and keep the fine-tuned model beside
the result JSON: `DenseProtocol.evaluate` does that once, and each task
fills in how it reads its data, fits its model and scores it.

```python
name = result_name("detect", 0.1, "random", seed=1)  # 'detect-10pct-random-seed1'
subset = seeded_subset(205, 0.1, seed=0)              # 20 sorted image indices
```
"""

import json
import os
import time
from pathlib import Path

import keras
import numpy as np

from byol_keras.config import Config
from byol_keras.data.image_files import FileLimits
from byol_keras.errors import UsageError
from byol_keras.nn import precise_bn
from byol_keras.runs import RunDirectory, atomic_write_text

VAL_SPLIT = "val"


class DenseProtocol:
    """A downstream task's `evaluate --protocol`: the shared steps here, the task's in a subclass.

    `evaluate` reads the train, val and test splits (`load`), refuses splits
    that share images and test images the run pretrained on (`pretrained_ids`),
    fine-tunes on a seeded `fraction` of the train images (`fit`), keeps the
    weights of the best val score, scores the test split (`score`), and writes
    the result JSON with the model beside it.

    Attributes:
        name: The `--protocol` value, also the config section and the result's name.
        data: The sources it reads, as `--data` must name them, e.g. "a segfolder:<path>".
        needs: What a run without such a default source is told to pass.
        val_metric: The result key of the val score that selects the weights.
        selection: The name of that score in words, e.g. "mean IoU".
        input: How an image becomes the model's input, in words.
    """

    name: str
    data: str
    needs: str
    val_metric: str
    selection: str
    input: str

    def default_data(self, config: Config) -> str | None:
        """The source the protocol reads by default: the run's `data.source`, if it is one."""
        source = config.data.source
        return source if self.accepts(source) else None

    def accepts(self, spec) -> bool:
        """Whether `spec` names a source of this task's format."""
        raise NotImplementedError

    def check_config(self, config: Config) -> None:
        """Refuses a bad task section before any data is read; nothing to refuse here."""

    def load(self, config: Config, spec: str, split: str, split_key: str, limits: FileLimits):
        """Split `split` of `spec`, with `len()` and `example_ids`; errors name `split_key`."""
        raise NotImplementedError

    def aligned(self, splits: dict) -> dict:
        """The splits made to agree (e.g. on class indices) before training; as they are here."""
        return splits

    def pretrained_ids(self, config: Config, source: str, limits: FileLimits) -> np.ndarray:
        """The example ids of the images the run pretrained on, from its `source`."""
        raise NotImplementedError

    def fit(self, backbone: keras.Model, config: Config, splits: dict, subset, seed: int):
        """Builds and fine-tunes the model; returns it and the fine-tune's record.

        The record holds `batch_size`, `steps`, `steps_per_epoch`, `best_epoch`,
        `val_curve` and the best val score under `val_metric`.
        """
        raise NotImplementedError

    def score(
        self, model: keras.Model, config: Config, splits: dict, subset, training: dict
    ) -> dict:
        """The result's task part after the train counts: counts, test figures, the metric.

        `subset` holds the indices of the train images the model was fine-tuned on.
        """
        raise NotImplementedError

    def parameters(self, config: Config) -> dict:
        """The result's parameters beyond the shared ones: model, loss, augmentation."""
        raise NotImplementedError

    def figures(self, result: dict) -> str:
        """The headline figures of the summary line, e.g. "AP50 61.00%, AP 30.00%"."""
        raise NotImplementedError

    def result_name(self, fraction: float, baseline: str | None, seed: int | None = None) -> str:
        """`<name>`, `<name>-10pct`, `<name>-random`, `<name>-10pct-random-seed1`."""
        return result_name(self.name, fraction, baseline, seed)

    def evaluate(
        self,
        run: RunDirectory,
        config: Config,
        spec: str,
        fraction: float,
        baseline: str | None,
        backbone: keras.Model,
        path: Path,
        started: float,
    ) -> dict:
        """Runs the protocol, writes its JSON to `path`, its model beside it; returns the result."""
        if not self.accepts(spec):
            raise UsageError(
                f"--data: --protocol {self.name} needs {self.data} source, got {spec!r}"
            )
        self.check_config(config)
        section = getattr(config, self.name)
        limits = FileLimits(config.data.max_file_mb, config.data.max_image_pixels)
        selects = f"--protocol {self.name} (it selects its model on split '{VAL_SPLIT}')"
        wanted = {
            "train": (config.eval.train_split, "eval.train_split"),
            "val": (VAL_SPLIT, selects),
            "test": (config.data.val_split, "data.val_split"),
        }
        splits = {
            role: self.load(config, spec, split, key, limits)
            for role, (split, key) in wanted.items()
        }
        check_disjoint(splits)
        splits = self.aligned(splits)
        pretraining = self.default_data(config)
        if baseline != "random" and pretraining is not None:
            refuse_pretraining_images(
                splits["test"].example_ids,
                self.pretrained_ids(config, pretraining, limits),
                f"{pretraining} split {config.data.split}",
            )
        seed = config.train.seed if section.seed is None else section.seed
        subset = seeded_subset(len(splits["train"]), fraction, seed)
        keras.utils.set_random_seed(seed)  # the heads' initial weights
        model, training = self.fit(backbone, config, splits, subset, seed)
        model_path = path.with_suffix("") / "model.keras"
        result = {
            "protocol": self.name,
            "backbone": "random_init" if baseline == "random" else "pretrained",
            "run": str(run.root),
            "data": spec,
            "splits": {role: split for role, (split, _) in wanted.items()},
            "n_train": len(subset),
            "n_train_available": len(splits["train"]),
            **self.score(model, config, splits, subset, training),
            f"val_{self.val_metric}": training[f"val_{self.val_metric}"],
            "best_epoch": training["best_epoch"],
            "val_curve": training["val_curve"],
            "parameters": {
                "label_fraction": fraction,
                "subset": "seeded random images of the train split",
                **{key: getattr(section, key) for key in vars(section)},
                "seed": seed,  # the one used: the section's seed, else train.seed
                "batch_size": training["batch_size"],
                "steps": training["steps"],
                "steps_per_epoch": training["steps_per_epoch"],
                **self.parameters(config),
                "selection": f"weights of the best {self.selection} on the {VAL_SPLIT} split, "
                "every epoch",
                "batchnorm": precise_bn.describe(section.precise_bn_batches),
                "input": self.input,
            },
            "model": str(model_path),
        }
        save_model(model, model_path)
        result["wall_time_seconds"] = time.perf_counter() - started
        result["summary_line"] = (
            f"{self.name} ({result['backbone']}) on {spec}:{config.data.val_split}: "
            f"{self.figures(result)} (n_train={len(subset)}, n_test={len(splits['test'])}, "
            f"{result['wall_time_seconds']:.0f} s) -> {path}"
        )
        atomic_write_text(path, json.dumps(result, indent=2))
        return result


def percent(score: float | None, missing: str) -> str:
    """A score as a percentage, or "n/a (<missing>)" when there was nothing to score."""
    return f"n/a ({missing})" if score is None else f"{score:.2%}"


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
