"""The detector's fine-tuning: augmented boxes follow their objects, and the kept weights carry
the BatchNorm statistics re-estimated for them."""

import keras
import numpy as np
import pytest

from byol_keras.data.box_sources import load_box_split
from byol_keras.nn.backbones import build_backbone
from byol_keras.nn.precise_bn import PreciseBN
from byol_keras.transfer.detection import training
from byol_keras.transfer.detection.model import build_detector
from byol_keras.transfer.detection.preprocessor import prepare_split
from byol_keras.transfer.detection.training import finetune_detector, training_batches
from tests.helpers.boxes import Scene, random_scenes, write_voc

SIZE = (64, 96)


def test_augmented_boxes_follow_the_objects_they_box(tmp_path):
    # One bright object per scene: after flip and scale jitter, the box must still frame it.
    scenes = [
        Scene(f"s{index}", 64, 96, [[8 + 9 * index, 10 + 3 * index, 40 + 9 * index, 50, 0, False]])
        for index in range(4)
    ]
    split = load_box_split(f"voc:{write_voc(tmp_path, {'train': scenes})}", "train")
    prepared = prepare_split(split, SIZE, as_uint8=True)
    flips = []
    for scale_range in ((1.0, 1.0), (0.6, 1.4)):
        batches = training_batches(prepared, 4, scale_range, seed=0)
        for images, targets in batches.take(3):
            boxes = np.asarray(targets["boxes"])[:, 0]
            for image, box in zip(np.asarray(images), boxes, strict=True):
                rows, columns = np.nonzero(image.mean(axis=-1) > 0.25)  # the object
                found = [columns.min(), rows.min(), columns.max() + 1, rows.max() + 1]
                np.testing.assert_allclose(box, found, atol=2.0)
            if scale_range == (1.0, 1.0):  # unscaled: x0 is 8, 17, 26 or 35 unless flipped
                flips += [x0 not in (8, 17, 26, 35) for x0 in np.round(boxes[:, 0])]
    assert any(flips) and not all(flips)


@pytest.mark.slow  # a fine-tune: 20-50 s on the shared CPU
def test_the_kept_detector_carries_batchnorm_statistics_re_estimated_for_its_weights(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(training, "MIN_STEPS_PER_EPOCH", 2)
    scenes = random_scenes(8, seed=0)
    root = write_voc(tmp_path, {"train": scenes[:6], "val": scenes[6:]})
    size = (64, 96)
    train = prepare_split(load_box_split(f"voc:{root}", "train"), size, as_uint8=True)
    val = prepare_split(load_box_split(f"voc:{root}", "val"), size)
    keras.utils.set_random_seed(3)
    backbone = build_backbone("resnet18", 64, stem="imagenet", width=16)
    detector = build_detector(backbone, 3, size, (8.0, 16.0, 32.0, 64.0, 128.0), head_width=8)
    finetune_detector(
        detector, train, val, 1, 4, 1e-3, 0.0, (0.75, 1.25), seed=3, precise_bn_batches=2
    )
    norms = [w for w in detector.non_trainable_weights if "moving" in w.path]
    kept = [np.asarray(w) for w in norms]
    # The average over the first two batches of the augmented training stream, in which the
    # one val score (epoch 1) drew them.
    keras.utils.set_random_seed(3)
    stream = training_batches(train, 4, (0.75, 1.25), seed=3).map(lambda images, _: images)
    assert PreciseBN(detector, run=detector.feature_extractor)(list(stream.take(2)), 2) == 2
    for weight, value in zip(norms, kept, strict=True):
        np.testing.assert_allclose(weight, value, rtol=1e-5, atol=1e-6, err_msg=weight.path)
