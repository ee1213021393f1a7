"""Evaluation of a finished run: linear probe, weighted kNN, fine-tuning and retrieval.

Which data: `--data` (default: the run's `data.val_source`) gives both sets;
the classifier is fitted on its `eval.train_split` split ("train") and
reported on its `data.val_split` split ("test"), without augmentation: each
image goes through the evaluation transform (`eval.resize`, `eval.crop_ratio`:
by default the short side resized, then the central square at the run's
image size; `augment/eval_transform.py`). `retrieval` instead ranks the training split (the
gallery) for each test image (a query) and reports Recall@1, Recall@5 and
mAP@R (`retrieval.py`). Figures are fractions in [0, 1]. Each protocol
writes `<run>/eval/<protocol>[-<fraction>pct][-random][@<data>].json`; `-random`
is the same protocol on the same architecture, untrained (`--baseline random`),
and `@<data>` names a `--data` other than the run's `data.val_source`.

```python
# doctest: slow
result = evaluate_run("runs/mnist", "linear")
result["top1"], result["summary_line"]
summary = compare_with_random_init("runs/quickstart")  # the quickstart's two probes
```
"""

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from byol_keras.augment.eval_transform import EvalTransform
from byol_keras.builders import backbone_from_config
from byol_keras.config import Config, load_config
from byol_keras.data import ImageSource, source_from_config
from byol_keras.data.labelled import check_classes, check_disjoint
from byol_keras.errors import UsageError
from byol_keras.evaluation.features import Embedder, source_arrays
from byol_keras.evaluation.finetune import (
    balanced_subset,
    finetune_batch_size,
    finetune_classifier,
    predict_scores,
)
from byol_keras.evaluation.knn import knn_class_scores
from byol_keras.evaluation.linear import fit_linear_probe
from byol_keras.evaluation.metrics import per_class_accuracy, top_k_accuracy
from byol_keras.evaluation.retrieval import retrieval_figures, retrieval_per_query
from byol_keras.registration import load_model
from byol_keras.runs import RunDirectory, atomic_write_text, check_writable
from byol_keras.tasks import PROTOCOLS, TASKS, listed

_FRACTION_PROTOCOLS = tuple(name for name, task in TASKS.items() if task.label_fraction)


def evaluate_run(
    run_dir,
    protocol: str,
    data: str | None = None,
    label_fraction: float | None = None,
    baseline: str | None = None,
    overrides=(),
) -> dict:
    """Runs one protocol on a finished run, writes its JSON and returns the result.

    `overrides` are `SECTION.KEY=VALUE` strings applied to the run's config
    (e.g. `eval.knn_k=20`). Bad input raises `UsageError`.

    Args:
        run_dir: A finished run directory.
        protocol: `"linear"`, `"knn"`, `"finetune"`, `"retrieval"`, or a task of
            `transfer/`: `"segment"` (transfer/segmentation/) or `"detect"` (transfer/detection/).
        data: A labelled source spec; default: the run's `data.val_source`.
        label_fraction: For `finetune`, `segment` and `detect`, the fraction of labelled
            training examples to use, in (0, 1] (default 1).
        baseline: `"random"` evaluates an untrained copy of the architecture.
        overrides: `SECTION.KEY=VALUE` strings applied to the run's config.

    Returns:
        The result written to `<run>/eval/`: `top1` (and `top5` from five
        classes on) and `per_class_top1`, or for retrieval `recall_at_1`,
        `recall_at_5`, `map_at_r` and `per_class`; the data and sizes used,
        `parameters` and `summary_line`.

    ```python
    # doctest: slow
    evaluate_run("runs/mnist", "finetune", label_fraction=0.01, baseline="random")
    ```
    """
    started = time.perf_counter()
    label_fraction = _checked_request(protocol, label_fraction, baseline)
    run = RunDirectory(run_dir).require_finished()
    config = load_config(run.config_path, list(overrides))
    check_writable(run.eval_dir, "--run")  # before the work, not when writing its result
    if TASKS[protocol].package:
        return _dense(protocol, run, config, data, label_fraction, baseline, started)
    spec = data or config.data.val_source
    if not spec:
        raise UsageError(
            f"--data: run '{run.root}' has no data.val_source; pass --data with a labelled source"
        )
    name = _result_name(protocol, label_fraction, baseline)
    if spec != load_config(run.config_path).data.val_source:  # the run's own, not --set's
        name += f"@{_slug(spec)}"
    path = run.eval_dir / f"{name}.json"
    _refuse_other_data(path, spec)
    train_set, test_set, class_names = _labelled_sets(config, spec)
    backbone = _backbone(run, config, random_init=baseline == "random")

    parameters, figures, train_labels, test_labels = _PROTOCOL_RUNNERS[protocol](
        backbone, config, train_set, test_set, len(class_names), label_fraction
    )
    check_classes(train_labels, test_labels, class_names, "--data")
    result = {
        "protocol": protocol,
        "backbone": "random_init" if baseline == "random" else "pretrained",
        "run": str(run.root),
        "data": spec,
        "train_split": config.eval.train_split,
        "test_split": config.data.val_split,
        "image_size": config.data.image_size,
        "eval_transform": EvalTransform.from_config(config).describe(),
        "n_train": int(len(train_labels)),
        "max_train": config.eval.max_train,
        "n_test": int(len(test_labels)),
        "num_classes": len(class_names),
        **figures(class_names),
        "parameters": parameters,
    }
    result["wall_time_seconds"] = time.perf_counter() - started
    result["summary_line"] = _summary_line(result, path)
    atomic_write_text(path, json.dumps(result, indent=2))
    return result


def _checked_request(protocol: str, label_fraction: float | None, baseline: str | None):
    """Refuses a bad protocol, baseline or label fraction; returns the fraction to use."""
    if protocol not in PROTOCOLS:
        raise UsageError(f"--protocol: expected one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    if baseline not in (None, "random"):
        raise UsageError(f"--baseline: the only baseline is 'random', got {baseline!r}")
    if label_fraction is not None and protocol not in _FRACTION_PROTOCOLS:
        raise UsageError(
            f"--label-fraction: applies to --protocol {listed(_FRACTION_PROTOCOLS, 'and')} only"
        )
    if protocol in _FRACTION_PROTOCOLS:
        label_fraction = 1.0 if label_fraction is None else label_fraction
        if not 0.0 < label_fraction <= 1.0:
            raise UsageError(f"--label-fraction: must lie in (0, 1], got {label_fraction}")
    return label_fraction


def _dense(protocol, run, config, data, fraction, baseline, started) -> dict:
    """A task of `transfer/` (`--protocol segment`, `detect`): its own sources and file names."""
    dense = TASKS[protocol].module("protocol").PROTOCOL
    default = dense.default_data(load_config(run.config_path))  # the run's own, not --set's
    spec = data or dense.default_data(config)
    if not spec:
        raise UsageError(f"--data: run '{run.root}' was not pretrained on {dense.needs}")
    name = dense.result_name(fraction, baseline, getattr(config, TASKS[protocol].section).seed)
    if spec != default:
        name += f"@{_slug(spec)}"
    path = run.eval_dir / f"{name}.json"
    _refuse_other_data(path, spec)
    backbone = _backbone(run, config, random_init=baseline == "random")
    return dense.evaluate(run, config, spec, fraction, baseline, backbone, path, started)


def _accuracies(scores: np.ndarray, test_labels: np.ndarray):
    """A classifier's figures, given the class names: top-1 overall and per class, top-5 from 5."""

    def figures(class_names: list[str]) -> dict:
        result = {
            "top1": top_k_accuracy(scores, test_labels, 1),
            "per_class_top1": per_class_accuracy(scores.argmax(axis=1), test_labels, class_names),
        }
        if len(class_names) >= 5:
            result["top5"] = top_k_accuracy(scores, test_labels, 5)
        return result

    return figures


def compare_with_random_init(run_dir) -> dict:
    """Linear-probes the pretrained backbone and an untrained copy; merges both into summary.json.

    ```python
    # doctest: slow
    summary = compare_with_random_init("runs/quickstart")
    summary["linear_probe_top1"] > summary["linear_probe_top1_random_init"]
    ```
    """
    pretrained = evaluate_run(run_dir, "linear")
    untrained = evaluate_run(run_dir, "linear", baseline="random")
    run = RunDirectory(run_dir)
    summary = {
        **run.read_summary(),
        "linear_probe_top1": pretrained["top1"],
        "linear_probe_top1_random_init": untrained["top1"],
        "linear_probe_data": f"{pretrained['data']}:{pretrained['test_split']}",
    }
    run.write_summary(summary)
    return summary


@dataclass(frozen=True)
class _LabelledSplit:
    """A split read when a protocol needs it: embedded batch by batch, or as images.

    Unlabelled examples are left out; `max_examples` keeps a seeded subset.
    """

    source: ImageSource
    max_examples: int | None
    seed: int
    transform: EvalTransform

    def features(self, embedder: Embedder) -> tuple[np.ndarray, np.ndarray]:
        """Features and labels; only one batch of images is ever in memory."""
        return self._nonempty(embedder.embed_source(self.source, self.max_examples, self.seed))

    def images(self) -> tuple[np.ndarray, np.ndarray]:
        """Images and labels, all in memory (fine-tuning trains on them for several epochs)."""
        arrays = source_arrays(
            self.source, self.max_examples, self.seed, labelled_only=True, transform=self.transform
        )
        return self._nonempty(arrays)

    def _nonempty(self, arrays: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        if len(arrays[1]) == 0:
            raise UsageError(f"--data: {self.source.description} has no labelled images")
        return arrays


def _labelled_sets(config: Config, spec: str):
    """The train and test splits as `_LabelledSplit`s, and the class names."""
    sources = [
        source_from_config(config, spec, split)
        for split in (config.eval.train_split, config.data.val_split)
    ]
    train_source, test_source = sources
    for source in sources:
        if not source.has_labels:
            raise UsageError(
                f"--data: {source.description} has no labels; evaluation needs a labelled source"
            )
    check_disjoint(train_source, test_source, "--data")
    seed, transform = config.train.seed, EvalTransform.from_config(config)
    sets = [
        _LabelledSplit(train_source, config.eval.max_train, seed, transform),
        _LabelledSplit(test_source, None, seed, transform),
    ]
    num_classes = max(train_source.num_classes, test_source.num_classes)
    names = train_source.class_names or test_source.class_names or []
    class_names = list(names) + [str(i) for i in range(len(names), num_classes)]
    return sets[0], sets[1], class_names


def _backbone(run: RunDirectory, config: Config, random_init: bool) -> keras.Model:
    if not random_init:
        return load_model(run.backbone_path, compile=False)
    keras.utils.set_random_seed(config.train.seed)
    return backbone_from_config(config)


def _embedder(backbone, config: Config) -> Embedder:
    return Embedder(backbone, config.eval.batch_size, EvalTransform.from_config(config))


def _linear(backbone, config, train_set, test_set, num_classes, _fraction):
    embedder = _embedder(backbone, config)
    train_features, train_labels = train_set.features(embedder)
    probe = fit_linear_probe(
        train_features,
        train_labels,
        num_classes,
        l2=config.eval.linear_l2,
        max_iter=config.eval.linear_max_iter,
        seed=config.train.seed,
    )
    parameters = {
        "classifier": "multinomial logistic regression, L-BFGS, standardised features",
        "l2": probe.l2,
        "l2_chosen_on_validation": probe.validation_accuracy or None,
        "max_iter": config.eval.linear_max_iter,
        "iterations": probe.iterations,
        "seed": config.train.seed,
        "augmentation": "none (the evaluation transform only)",
    }
    test_features, test_labels = test_set.features(embedder)
    scores = probe.scores(test_features)
    return parameters, _accuracies(scores, test_labels), train_labels, test_labels


def _knn(backbone, config, train_set, test_set, num_classes, _fraction):
    embedder = _embedder(backbone, config)
    train_features, train_labels = train_set.features(embedder)
    test_features, test_labels = test_set.features(embedder)
    scores = knn_class_scores(
        train_features,
        train_labels,
        test_features,
        num_classes,
        k=config.eval.knn_k,
        temperature=config.eval.knn_temperature,
    )
    parameters = {
        "k": config.eval.knn_k,
        "temperature": config.eval.knn_temperature,
        "similarity": "cosine",
        "weighting": "exp(similarity / temperature), summed per class",
        "augmentation": "none (the evaluation transform only)",
    }
    return parameters, _accuracies(scores, test_labels), train_labels, test_labels


def _finetune(backbone, config, train_set, test_set, num_classes, fraction):
    train_images, train_labels = train_set.images()
    subset = balanced_subset(train_labels, fraction, config.train.seed)
    classifier = finetune_classifier(
        backbone,
        train_images[subset],
        train_labels[subset],
        num_classes,
        epochs=config.eval.finetune_epochs,
        learning_rate=config.eval.finetune_lr,
        batch_size=config.eval.batch_size,
        seed=config.train.seed,
    )
    parameters = {
        "label_fraction": fraction,
        "n_labelled": int(len(subset)),
        "subset": "the same fraction of every class, seeded with train.seed",
        "seed": config.train.seed,
        "epochs": config.eval.finetune_epochs,
        "learning_rate": config.eval.finetune_lr,
        "batch_size": finetune_batch_size(len(subset), config.eval.batch_size),
        "optimizer": "SGD, Nesterov momentum 0.9, cosine decay, no weight decay",
        "augmentation": "random crop (reflect pad 1/8) + horizontal flip",
    }
    test_images, test_labels = test_set.images()
    scores = predict_scores(classifier, test_images, config.eval.batch_size)
    return parameters, _accuracies(scores, test_labels), train_labels, test_labels


def _retrieval(backbone, config, train_set, test_set, _num_classes, _fraction):
    embedder = _embedder(backbone, config)
    gallery_features, gallery_labels = train_set.features(embedder)
    query_features, query_labels = test_set.features(embedder)

    def figures(class_names: list[str]) -> dict:  # after check_classes: every R is >= 1
        per_query = retrieval_per_query(
            query_features, query_labels, gallery_features, gallery_labels
        )
        return retrieval_figures(per_query, query_labels, class_names)

    parameters = {
        "queries": "the test split; gallery: the train split",
        "similarity": "cosine",
        "recall_at_k": "1 when one of the k nearest gallery items has the query's class",
        "map_at_r": "Musgrave, Belongie, Lim, A Metric Learning Reality Check, ECCV 2020",
        "ties": "the lower gallery index ranks first",
        "augmentation": "none (the evaluation transform only)",
    }
    return parameters, figures, gallery_labels, query_labels


_PROTOCOL_RUNNERS = {
    "linear": _linear,
    "knn": _knn,
    "finetune": _finetune,
    "retrieval": _retrieval,
}


def _result_name(protocol: str, fraction: float | None, baseline: str | None) -> str:
    name = protocol
    if protocol == "finetune":
        name += f"-{fraction * 100:g}pct"
    return f"{name}-random" if baseline == "random" else name


def _slug(spec: str, limit: int = 80) -> str:
    """`spec` as a file-name part: runs of other characters than `A-Za-z0-9._-` become `_`."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", spec).strip("_.")[:limit] or "data"


def _refuse_other_data(path: Path, spec: str) -> None:
    """Two data sets whose names give the same slug must not overwrite each other's result."""
    if not path.is_file():
        return
    try:
        previous = json.loads(path.read_text()).get("data")
    except (ValueError, AttributeError):
        return  # unreadable: replacing it loses nothing
    if previous not in (None, spec):
        raise UsageError(
            f"--data: {path} holds a result on {previous!r}, not {spec!r}; move it away first"
        )


def _summary_line(result: dict, path: Path) -> str:
    if result["protocol"] == "retrieval":
        figures = (
            f"Recall@1 {result['recall_at_1']:.2%}, Recall@5 {result['recall_at_5']:.2%}, "
            f"mAP@R {result['map_at_r']:.2%}"
        )
    else:
        top5 = f", top-5 {result['top5']:.2%}" if "top5" in result else ""
        figures = f"top-1 {result['top1']:.2%}{top5}"
    return (
        f"{result['protocol']} ({result['backbone']}) on {result['data']}:{result['test_split']}: "
        f"{figures} (n_train={result['n_train']}, "
        f"n_test={result['n_test']}, {result['wall_time_seconds']:.0f} s) -> {path}"
    )


__all__ = ["compare_with_random_init", "evaluate_run"]
