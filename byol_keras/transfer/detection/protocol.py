"""`--protocol detect`: fine-tune a RetinaNet on a run's backbone, select on val, report on test.

Data: a `voc:<path>` or `coco:<path>` source (`--data`, default the run's
`data.source` when it is one). The detector (detector.py) is fine-tuned on
the `eval.train_split` split (all of it, or a seeded `--label-fraction` of
its images), the weights of the best val AP50 (split `val`) are kept, and
the test split (`data.val_split`) is scored by pycocotools in each image's
original pixels. A test image that the run pretrained on is refused.

Writes `<run>/eval/detect[-<N>pct][-random][-seed<N>][@<data>].json` and
keeps the fine-tuned detector at `<run>/eval/detect[...]/model.keras`.

```python
# doctest: slow
from byol_keras.evaluation import evaluate_run  # the way in: it loads the run and checks the flags

tiny = ["detect.epochs=1", "detect.image_size=[64, 64]", "detect.batch_size=2"]
result = evaluate_run("runs/bccd", "detect", label_fraction=0.5, overrides=tiny)
result["ap50"], result["per_class_ap50"]["Platelets"]  # COCO AP at IoU 0.5 on the test split
```
"""

import json
import time
from dataclasses import replace
from pathlib import Path

import keras
import numpy as np

from byol_keras.config import Config
from byol_keras.data.box_sources import BOX_FORMATS, load_box_split
from byol_keras.data.boxes import BoxSplit, match_classes
from byol_keras.data.image_files import FileLimits
from byol_keras.data.labelled import check_classes
from byol_keras.errors import UsageError
from byol_keras.runs import RunDirectory, atomic_write_text
from byol_keras.transfer import precise_bn
from byol_keras.transfer.detection.metrics import detection_scores
from byol_keras.transfer.detection.model import (
    ANCHOR_ASPECT_RATIOS,
    ANCHOR_SCALES,
    LEVEL_STRIDES,
    NMS_IOU,
    build_detector,
    finetune_detector,
    predict_detections,
    prepare_split,
)
from byol_keras.transfer.protocol import (
    check_disjoint,
    refuse_pretraining_images,
    save_model,
    seeded_subset,
)
from byol_keras.transfer.protocol import result_name as protocol_result_name

VAL_SPLIT = "val"
FIGURES = ("ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large")


def is_box_source(spec) -> bool:
    """Whether `spec` names a `voc:<path>` or `coco:<path>` source."""
    if not isinstance(spec, str):
        return False
    prefix, _, path = spec.partition(":")
    return prefix in BOX_FORMATS and bool(path)


def default_detect_data(config: Config) -> str | None:
    """The box source a run's detection defaults to: its `data.source`, if voc: or coco:."""
    return config.data.source if is_box_source(config.data.source) else None


def result_name(fraction: float, baseline: str | None, seed: int | None = None) -> str:
    """`detect`, `detect-10pct`, `detect-random`, `detect-10pct-random-seed1`."""
    return protocol_result_name("detect", fraction, baseline, seed)


def evaluate_detection(
    run: RunDirectory,
    config: Config,
    spec: str,
    fraction: float,
    baseline: str | None,
    backbone: keras.Model,
    path: Path,
    started: float,
) -> dict:
    """Runs the protocol, writes its JSON to `path` and its model beside it; returns the result."""
    if not is_box_source(spec):
        raise UsageError(
            f"--data: --protocol detect needs a voc:<path> or coco:<path> source, got {spec!r}"
        )
    det = config.detect
    size = tuple(det.image_size)
    limits = FileLimits(config.data.max_file_mb, config.data.max_image_pixels)

    def load(split: str, split_key: str) -> BoxSplit:
        return load_box_split(spec, split, limits, "--data", split_key)

    train = load(config.eval.train_split, "eval.train_split")
    val = load(VAL_SPLIT, f"--protocol detect (it selects its model on split '{VAL_SPLIT}')")
    test = load(config.data.val_split, "data.val_split")
    check_disjoint({"train": train, "val": val, "test": test})
    val = match_classes(val, train.class_names, f"the {VAL_SPLIT} split")
    test = match_classes(test, train.class_names, "the test split")
    check_classes(
        np.concatenate(train.classes), np.concatenate(test.classes), train.class_names, "--data"
    )
    pretraining = default_detect_data(config)
    if baseline != "random" and pretraining is not None:
        seen = load_box_split(pretraining, config.data.split, limits, "data.source")
        refuse_pretraining_images(
            test.example_ids, seen.example_ids, f"{pretraining} split {config.data.split}"
        )
    seed = config.train.seed if det.seed is None else det.seed
    subset = seeded_subset(len(train), fraction, seed)
    train_subset = image_subset(train, subset)

    keras.utils.set_random_seed(seed)  # the heads' initial weights
    detector = build_detector(
        backbone,
        len(train.class_names),
        size,
        det.anchor_sizes,
        det.freeze_backbone,
        det.score_threshold,
        det.max_detections,
        det.head_width,
        det.head_init,
    )
    training = finetune_detector(
        detector,
        prepare_split(train_subset, size, as_uint8=True),
        prepare_split(val, size),
        epochs=det.epochs,
        batch_size=det.batch_size,
        learning_rate=det.lr,
        weight_decay=det.weight_decay,
        scale_range=tuple(det.scale_range),
        seed=seed,
        precise_bn_batches=det.precise_bn_batches,
    )
    scores = detection_scores(
        test, predict_detections(detector, prepare_split(test, size), training["batch_size"])
    )
    model_path = path.with_suffix("") / "model.keras"
    splits = {"train": train, "val": val, "test": test}
    result = {
        "protocol": "detect",
        "backbone": "random_init" if baseline == "random" else "pretrained",
        "run": str(run.root),
        "data": spec,
        "splits": {
            "train": config.eval.train_split,
            "val": VAL_SPLIT,
            "test": config.data.val_split,
        },
        "n_train": len(subset),
        "n_train_available": len(train),
        "n_train_boxes": train_subset.num_boxes,
        "n_val": len(val),
        "n_test": len(test),
        "n_test_boxes": test.num_boxes,
        "skipped_files": {name: split.skipped_files for name, split in splits.items()},
        "skipped_boxes": {name: split.skipped_boxes for name, split in splits.items()},
        "clipped_boxes": {name: split.clipped_boxes for name, split in splits.items()},
        "class_names": train.class_names,
        **scores,
        "metric": "pycocotools COCOeval (bbox) on the test split in each image's original "
        "pixels; difficult (VOC) and iscrowd (COCO) boxes are crowds, never positives",
        "val_ap50": training["val_ap50"],
        "best_epoch": training["best_epoch"],
        "val_curve": training["val_curve"],
        "parameters": {
            "label_fraction": fraction,
            "subset": "seeded random images of the train split",
            **{key: getattr(det, key) for key in vars(det)},
            "seed": seed,  # the one used: detect.seed, else train.seed
            "batch_size": training["batch_size"],
            "steps": training["steps"],
            "steps_per_epoch": training["steps_per_epoch"],
            "detector": "KerasCV 0.9 RetinaNet: backbone strides 8/16/32 as P3-P5, KerasCV's "
            "FPN (width 256) adds P6-P7; class and box heads of 2 convolutions "
            f"(width {det.head_width}, {det.head_init} kernels), class prior p = 0.01",
            "anchors": {
                "sizes": det.anchor_sizes,
                "strides": list(LEVEL_STRIDES),
                "scales": list(ANCHOR_SCALES),
                "aspect_ratios": list(ANCHOR_ASPECT_RATIOS),
            },
            "decoder": f"per-class non-maximum suppression at IoU {NMS_IOU}",
            "optimizer": "AdamW, cosine decay to 0, no warm-up, global gradient norm clip 10",
            "loss": "focal loss (alpha 0.25, gamma 2) + smooth L1 on box offsets",
            "augmentation": "KerasCV RandomFlip (horizontal) and JitteredResize (scale_range), "
            "bounding_box_format xyxy",
            "selection": f"weights of the best AP50 on the {VAL_SPLIT} split, every epoch",
            "batchnorm": precise_bn.describe(det.precise_bn_batches),
            "input": "resized keeping the aspect ratio to fit image_size (bilinear, no "
            "antialiasing), padded at the bottom and right, scaled to [0, 1]",
        },
        "model": str(model_path),
    }
    save_model(detector, model_path)
    result["wall_time_seconds"] = time.perf_counter() - started
    result["summary_line"] = (
        f"detect ({result['backbone']}) on {spec}:{config.data.val_split}: "
        f"AP50 {_percent(result['ap50'])}, AP {_percent(result['ap'])} "
        f"(n_train={len(subset)}, n_test={len(test)}, {result['wall_time_seconds']:.0f} s) "
        f"-> {path}"
    )
    atomic_write_text(path, json.dumps(result, indent=2))
    return result


def result_test_split(result: dict) -> BoxSplit:
    """The test split a detection result was scored on, read again, on the result's classes."""
    test = load_box_split(result["data"], result["splits"]["test"])
    return match_classes(test, result["class_names"], "the test split")


def _percent(score: float | None) -> str:
    # None: pycocotools found no true box to score (every test box difficult, or none).
    return "n/a (no scored test box)" if score is None else f"{score:.2%}"


def image_subset(split: BoxSplit, indices) -> BoxSplit:
    """The images of `split` at `indices`; the skip counts stay those of the whole split.

    ```python
    from byol_keras.data.voc import load_voc

    train = load_voc("bccd", "train")
    half = image_subset(train, seeded_subset(len(train), 0.5, seed=0))
    assert len(half) == len(train) // 2
    ```
    """

    def pick(values):
        return [values[i] for i in indices]

    return replace(
        split,
        paths=pick(split.paths),
        names=pick(split.names),
        sizes=split.sizes[indices],
        boxes=pick(split.boxes),
        classes=pick(split.classes),
        difficult=pick(split.difficult),
        needs_pillow=split.needs_pillow[indices],
    )
