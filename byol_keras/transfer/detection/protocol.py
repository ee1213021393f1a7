"""`--protocol detect`: fine-tune a RetinaNet on a run's backbone, select on val, report on test.

Data: a `voc:<path>` or `coco:<path>` source (`--data`, default the run's
`data.source` when it is one). The detector (model.py) is fine-tuned on
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

from dataclasses import replace

import keras
import numpy as np

from byol_keras.config import Config
from byol_keras.data.box_sources import BOX_FORMATS, load_box_split
from byol_keras.data.boxes import BoxSplit, match_classes
from byol_keras.data.image_files import FileLimits
from byol_keras.data.labelled import check_classes
from byol_keras.transfer.detection.metrics import detection_scores
from byol_keras.transfer.detection.model import (
    ANCHOR_ASPECT_RATIOS,
    ANCHOR_SCALES,
    LEVEL_STRIDES,
    NMS_IOU,
    build_detector,
)
from byol_keras.transfer.detection.prediction import predict_detections
from byol_keras.transfer.detection.preprocessor import prepare_split
from byol_keras.transfer.detection.training import finetune_detector
from byol_keras.transfer.protocol import VAL_SPLIT, DenseProtocol, percent


def is_box_source(spec) -> bool:
    """Whether `spec` names a `voc:<path>` or `coco:<path>` source."""
    if not isinstance(spec, str):
        return False
    prefix, _, path = spec.partition(":")
    return prefix in BOX_FORMATS and bool(path)


class DetectProtocol(DenseProtocol):
    """`--protocol detect` on a `voc:` or `coco:` source: COCO AP figures from pycocotools."""

    name = "detect"
    data = "a voc:<path> or coco:<path>"
    needs = "a voc: or coco: source; pass --data voc:<path> or coco:<path>"
    val_metric = "ap50"
    selection = "AP50"
    input = (
        "resized keeping the aspect ratio to fit image_size (bilinear, no antialiasing), "
        "padded at the bottom and right, scaled to [0, 1]"
    )

    def accepts(self, spec) -> bool:
        return is_box_source(spec)

    def load(
        self, config: Config, spec: str, split: str, split_key: str, limits: FileLimits
    ) -> BoxSplit:
        return load_box_split(spec, split, limits, "--data", split_key)

    def aligned(self, splits: dict) -> dict:
        train, val, test = splits["train"], splits["val"], splits["test"]
        val = match_classes(val, train.class_names, f"the {VAL_SPLIT} split")
        test = match_classes(test, train.class_names, "the test split")
        check_classes(
            np.concatenate(train.classes), np.concatenate(test.classes), train.class_names, "--data"
        )
        return {"train": train, "val": val, "test": test}

    def pretrained_ids(self, config: Config, source: str, limits: FileLimits):
        return load_box_split(source, config.data.split, limits, "data.source").example_ids

    def fit(self, backbone: keras.Model, config: Config, splits: dict, subset, seed: int):
        det, size = config.detect, tuple(config.detect.image_size)
        detector = build_detector(
            backbone,
            len(splits["train"].class_names),
            size,
            det.anchor_sizes,
            det.freeze_backbone,
            det.score_threshold,
            det.max_detections,
            det.head_width,
            det.head_init,
            det.norm,
        )
        training = finetune_detector(
            detector,
            prepare_split(image_subset(splits["train"], subset), size, as_uint8=True),
            prepare_split(splits["val"], size),
            epochs=det.epochs,
            batch_size=det.batch_size,
            learning_rate=det.lr,
            weight_decay=det.weight_decay,
            scale_range=tuple(det.scale_range),
            seed=seed,
            precise_bn_batches=det.precise_bn_batches,
        )
        return detector, training

    def score(
        self, model: keras.Model, config: Config, splits: dict, subset, training: dict
    ) -> dict:
        test = splits["test"]
        prepared = prepare_split(test, tuple(config.detect.image_size))
        scores = detection_scores(test, predict_detections(model, prepared, training["batch_size"]))
        return {
            "n_train_boxes": image_subset(splits["train"], subset).num_boxes,
            "n_val": len(splits["val"]),
            "n_test": len(test),
            "n_test_boxes": test.num_boxes,
            "skipped_files": {role: split.skipped_files for role, split in splits.items()},
            "skipped_boxes": {role: split.skipped_boxes for role, split in splits.items()},
            "clipped_boxes": {role: split.clipped_boxes for role, split in splits.items()},
            "class_names": splits["train"].class_names,
            **scores,
            "metric": "pycocotools COCOeval (bbox) on the test split in each image's original "
            "pixels; difficult (VOC) and iscrowd (COCO) boxes are crowds, never positives",
        }

    def parameters(self, config: Config) -> dict:
        det = config.detect
        return {
            "detector": "KerasCV 0.9 RetinaNet: backbone strides 8/16/32 as P3-P5, KerasCV's "
            "FPN (width 256) adds P6-P7; class and box heads of 2 convolutions "
            f"(width {det.head_width}, {det.head_init} kernels, norm {det.norm}), "
            "class prior p = 0.01",
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
        }

    def figures(self, result: dict) -> str:
        # n/a: pycocotools found no true box to score (every test box difficult, or none).
        missing = "no scored test box"
        return f"AP50 {percent(result['ap50'], missing)}, AP {percent(result['ap'], missing)}"


PROTOCOL = DetectProtocol()
evaluate_detection = PROTOCOL.evaluate
result_name = PROTOCOL.result_name


def result_test_split(result: dict) -> BoxSplit:
    """The test split a detection result was scored on, read again, on the result's classes."""
    test = load_box_split(result["data"], result["splits"]["test"])
    return match_classes(test, result["class_names"], "the test split")


def image_subset(split: BoxSplit, indices) -> BoxSplit:
    """The images of `split` at `indices`; the skip counts stay those of the whole split.

    ```python
    from byol_keras.data.voc import load_voc
    from byol_keras.transfer.protocol import seeded_subset

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
