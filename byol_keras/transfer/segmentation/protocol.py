"""`--protocol segment`: fine-tune a segmenter on a run's backbone, select on val, report on test.

Data: a `segfolder:` source (`--data`, default the run's `data.source` when it
is one). The segmenter is fine-tuned on the `eval.train_split` split (all of
it, or a seeded `--label-fraction` of its images), the weights of the best
val mean IoU (split `val`) are kept, and the test split (`data.val_split`)
is scored from one confusion matrix over all its pixels, each prediction
upsampled to its mask's own size. Every image is resized to
`segment.image_size` first, as the exported segmenter does. A test image
that the run pretrained on is refused.

Writes `<run>/eval/segment[-<N>pct][-random][@<data>].json` and keeps the
fine-tuned model at `<run>/eval/segment[...]/model.keras`.

```python
# doctest: slow
from byol_keras.evaluation import evaluate_run  # the way in: it loads the run and checks the flags

tiny = ["segment.epochs=1", "segment.image_size=[24, 32]", "segment.decoder_channels=8"]
result = evaluate_run("runs/quickstart", "segment", "segfolder:camvid", 0.5, overrides=tiny)
result["mean_iou"], result["per_class_iou"]  # {"0": ..., "1": ...}; CamVid's names: "road", ...
```
"""

import json
import time
from pathlib import Path

import keras

from byol_keras.config import Config
from byol_keras.data.image_files import FileLimits
from byol_keras.data.segfolder import (
    SegmentationSplit,
    load_segmentation_split,
    split_image_ids,
)
from byol_keras.errors import UsageError
from byol_keras.runs import RunDirectory, atomic_write_text
from byol_keras.transfer import precise_bn
from byol_keras.transfer.protocol import (
    check_disjoint,
    refuse_pretraining_images,
    save_model,
    seeded_subset,
)
from byol_keras.transfer.protocol import result_name as protocol_result_name
from byol_keras.transfer.segmentation.augment import JointAugment
from byol_keras.transfer.segmentation.metrics import segmentation_scores
from byol_keras.transfer.segmentation.model import (
    build_segmenter,
    finetune_segmenter,
    predict_confusion,
)

VAL_SPLIT = "val"
PREFIX = "segfolder:"


def default_segment_data(config: Config) -> str | None:
    """The segfolder source a run's segmentation defaults to: its `data.source`, if one."""
    source = config.data.source
    return source if isinstance(source, str) and source.startswith(PREFIX) else None


def result_name(fraction: float, baseline: str | None, seed: int | None = None) -> str:
    """`segment`, `segment-10pct`, `segment-random`, `segment-10pct-random-seed1`.

    A set `segment.seed` is in the name, so that one seed's result never replaces another's.
    """
    return protocol_result_name("segment", fraction, baseline, seed)


def class_names(config: Config) -> list[str]:
    """`segment.class_names` split at commas, else the class indices as text."""
    count = config.segment.num_classes
    if not config.segment.class_names:
        return [str(index) for index in range(count)]
    names = [name.strip() for name in config.segment.class_names.split(",")]
    if len(names) != count:
        raise UsageError(
            f"segment.class_names: {len(names)} names for segment.num_classes = {count}"
        )
    return names


def evaluate_segmentation(
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
    if not spec.startswith(PREFIX) or not spec[len(PREFIX) :]:
        raise UsageError(
            f"--data: --protocol segment needs a segfolder:<path> source, got {spec!r}"
        )
    seg = config.segment
    names = class_names(config)
    root = spec[len(PREFIX) :]
    size = tuple(seg.image_size)
    limits = FileLimits(config.data.max_file_mb, config.data.max_image_pixels)

    def load(split, split_key):
        return load_segmentation_split(
            root, split, size, seg.num_classes, seg.ignore_index, limits, split_key
        )

    train = load(config.eval.train_split, "eval.train_split")
    val = load(VAL_SPLIT, f"--protocol segment (it selects its model on split '{VAL_SPLIT}')")
    test = load(config.data.val_split, "data.val_split")
    check_disjoint({"train": train, "val": val, "test": test})
    if baseline != "random":
        _refuse_pretrained_test_images(config, test)
    seed = config.train.seed if seg.seed is None else seg.seed
    subset = seeded_subset(len(train), fraction, seed)

    keras.utils.set_random_seed(seed)  # the head's initial weights
    segmenter = build_segmenter(
        backbone, seg.num_classes, seg.decoder_channels, seg.freeze_backbone
    )
    crop = tuple(seg.crop_size or seg.image_size)
    augment = JointAugment(crop, tuple(seg.scale_range), seg.jitter)
    training = finetune_segmenter(
        segmenter,
        (train.images[subset], train.masks[subset]),
        (val.images, val.masks),
        augment,
        epochs=seg.epochs,
        batch_size=seg.batch_size,
        learning_rate=seg.lr,
        weight_decay=seg.weight_decay,
        num_classes=seg.num_classes,
        ignore_index=seg.ignore_index,
        seed=seed,
        precise_bn_batches=seg.precise_bn_batches,
    )
    confusion = predict_confusion(
        segmenter, test.images, test.full_masks, seg.num_classes, seg.ignore_index, seg.batch_size
    )
    model_path = path.with_suffix("") / "model.keras"
    result = {
        "protocol": "segment",
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
        "n_val": len(val),
        "n_test": len(test),
        "skipped_files": {
            "train": train.skipped_files,
            "val": val.skipped_files,
            "test": test.skipped_files,
        },
        "num_classes": seg.num_classes,
        "ignore_index": seg.ignore_index,
        "class_names": names,
        **segmentation_scores(confusion, names),
        "confusion_matrix": confusion.tolist(),
        "metric": "one confusion matrix over all test pixels at each mask's own size; "
        "void pixels excluded; mean IoU over classes present in truth or prediction",
        "val_mean_iou": training["val_mean_iou"],
        "best_epoch": training["best_epoch"],
        "val_curve": training["val_curve"],
        "parameters": {
            "label_fraction": fraction,
            "subset": "seeded random images of the train split",
            **{key: getattr(seg, key) for key in vars(seg)},
            "seed": seed,  # the one used: segment.seed, else train.seed
            "crop_size": list(crop),
            "batch_size": training["batch_size"],
            "steps": training["steps"],
            "steps_per_epoch": training["steps_per_epoch"],
            "optimizer": "AdamW, cosine decay to 0, no warm-up",
            "loss": "softmax cross-entropy on logits, void pixels weighted 0",
            "decoder": "FPN semantic head: 1x1 laterals, top-down upsample-add, 3x3 smooth, "
            "sum at the finest level, 3x3 conv, 1x1 classifier, bilinear upsample",
            "augmentation": "random scale in scale_range, crop to crop_size (padding void), "
            "horizontal flip; brightness/contrast/saturation jitter on the image only",
            "selection": f"weights of the best mean IoU on the {VAL_SPLIT} split, every epoch",
            "batchnorm": precise_bn.describe(seg.precise_bn_batches),
            "input": "bilinear resize (no antialiasing) to image_size, scaled to [0, 1]",
        },
        "model": str(model_path),
    }
    save_model(segmenter, model_path)
    result["wall_time_seconds"] = time.perf_counter() - started
    result["summary_line"] = (
        f"segment ({result['backbone']}) on {spec}:{config.data.val_split}: "
        f"mean IoU {_percent(result['mean_iou'])}, "
        f"pixel accuracy {_percent(result['pixel_accuracy'])} "
        f"(n_train={len(subset)}, n_test={len(test)}, {result['wall_time_seconds']:.0f} s) "
        f"-> {path}"
    )
    atomic_write_text(path, json.dumps(result, indent=2))
    return result


def result_test_split(result: dict, size: tuple) -> SegmentationSplit:
    """The test split a segmentation result was scored on, loaded again at `size`."""
    return load_segmentation_split(
        result["data"][len(PREFIX) :],
        result["splits"]["test"],
        size,
        result["num_classes"],
        result["ignore_index"],
    )


def _percent(score: float | None) -> str:
    # None: the test masks hold no scored pixel (all void), so there is no score to give.
    return "n/a (no scored test pixel)" if score is None else f"{score:.2%}"


def _refuse_pretrained_test_images(config: Config, test) -> None:
    """Never report on images the backbone was pretrained on."""
    pretraining = default_segment_data(config)
    if pretraining is None:
        return
    seen = split_image_ids(pretraining[len(PREFIX) :], config.data.split)
    refuse_pretraining_images(test.example_ids, seen, f"{pretraining} split {config.data.split}")
