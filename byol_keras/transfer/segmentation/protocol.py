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

import keras

from byol_keras.config import Config
from byol_keras.data.image_files import FileLimits
from byol_keras.data.segfolder import (
    SegmentationSplit,
    load_segmentation_split,
    split_image_ids,
)
from byol_keras.errors import UsageError
from byol_keras.transfer.protocol import DenseProtocol, percent
from byol_keras.transfer.segmentation.augment import JointAugment
from byol_keras.transfer.segmentation.metrics import segmentation_scores
from byol_keras.transfer.segmentation.model import build_segmenter, predict_confusion
from byol_keras.transfer.segmentation.training import finetune_segmenter

PREFIX = "segfolder:"


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


class SegmentProtocol(DenseProtocol):
    """`--protocol segment` on a `segfolder:` source: mean IoU from one test confusion matrix."""

    name = "segment"
    data = "a segfolder:<path>"
    needs = "a segfolder source; pass --data segfolder:<path>"
    val_metric = "mean_iou"
    selection = "mean IoU"
    input = "bilinear resize (no antialiasing) to image_size, scaled to [0, 1]"

    def accepts(self, spec) -> bool:
        return isinstance(spec, str) and spec.startswith(PREFIX) and bool(spec[len(PREFIX) :])

    def check_config(self, config: Config) -> None:
        class_names(config)

    def load(
        self, config: Config, spec: str, split: str, split_key: str, limits: FileLimits
    ) -> SegmentationSplit:
        seg = config.segment
        return load_segmentation_split(
            spec[len(PREFIX) :],
            split,
            tuple(seg.image_size),
            seg.num_classes,
            seg.ignore_index,
            limits,
            split_key,
        )

    def pretrained_ids(self, config: Config, source: str, limits: FileLimits):
        return split_image_ids(source[len(PREFIX) :], config.data.split)

    def fit(self, backbone: keras.Model, config: Config, splits: dict, subset, seed: int):
        seg = config.segment
        segmenter = build_segmenter(
            backbone, seg.num_classes, seg.decoder_channels, seg.freeze_backbone
        )
        train, val = splits["train"], splits["val"]
        augment = JointAugment(_crop(config), tuple(seg.scale_range), seg.jitter)
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
        return segmenter, training

    def score(
        self, model: keras.Model, config: Config, splits: dict, subset, training: dict
    ) -> dict:
        seg, test = config.segment, splits["test"]
        confusion = predict_confusion(
            model, test.images, test.full_masks, seg.num_classes, seg.ignore_index, seg.batch_size
        )
        names = class_names(config)
        return {
            "n_val": len(splits["val"]),
            "n_test": len(test),
            "skipped_files": {role: split.skipped_files for role, split in splits.items()},
            "num_classes": seg.num_classes,
            "ignore_index": seg.ignore_index,
            "class_names": names,
            **segmentation_scores(confusion, names),
            "confusion_matrix": confusion.tolist(),
            "metric": "one confusion matrix over all test pixels at each mask's own size; "
            "void pixels excluded; mean IoU over classes present in truth or prediction",
        }

    def parameters(self, config: Config) -> dict:
        return {
            "crop_size": list(_crop(config)),
            "optimizer": "AdamW, cosine decay to 0, no warm-up",
            "loss": "softmax cross-entropy on logits, void pixels weighted 0",
            "decoder": "FPN semantic head: 1x1 laterals, top-down upsample-add, 3x3 smooth, "
            "sum at the finest level, 3x3 conv, 1x1 classifier, bilinear upsample",
            "augmentation": "random scale in scale_range, crop to crop_size (padding void), "
            "horizontal flip; brightness/contrast/saturation jitter on the image only",
        }

    def figures(self, result: dict) -> str:
        # n/a: the test masks hold no scored pixel (all void), so there is no score to give.
        missing = "no scored test pixel"
        return (
            f"mean IoU {percent(result['mean_iou'], missing)}, "
            f"pixel accuracy {percent(result['pixel_accuracy'], missing)}"
        )


PROTOCOL = SegmentProtocol()
evaluate_segmentation = PROTOCOL.evaluate
result_name = PROTOCOL.result_name


def result_test_split(result: dict, size: tuple) -> SegmentationSplit:
    """The test split a segmentation result was scored on, loaded again at `size`."""
    return load_segmentation_split(
        result["data"][len(PREFIX) :],
        result["splits"]["test"],
        size,
        result["num_classes"],
        result["ignore_index"],
    )


def _crop(config: Config) -> tuple:
    return tuple(config.segment.crop_size or config.segment.image_size)
