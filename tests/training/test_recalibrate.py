"""The end of pretraining re-estimates BatchNorm statistics on images as inference sees them.

The check is the one issue 29 asks for: on a batch of the training images as
the evaluation transform gives them, the saved backbone's inference-mode
features match its training-mode features (which normalise with the batch's
own statistics). Without the re-estimation they do not, which shows the check
can fail.
"""

import json
from pathlib import Path

import keras
import numpy as np
import pytest

from byol_keras.augment.eval_transform import EvalTransform
from byol_keras.cli import main
from byol_keras.config import load_config
from byol_keras.data import source_from_config
from byol_keras.nn.backbones import build_backbone
from byol_keras.registration import load_model
from byol_keras.training.recalibrate import recalibrate_batchnorm

QUICKSTART = Path(__file__).resolve().parents[2] / "configs" / "quickstart.yaml"
TINY_RESNET = [
    "model.backbone=resnet18",
    "model.stem=cifar",
    "model.width=4",
    "model.projection_dim=8",
    "model.projector_hidden_dim=16",
    "model.predictor_hidden_dim=16",
    "data.image_size=32",
    "train.batch_size=64",
    "train.verbose=0",
    "eval.final_linear_probe=false",
    "eval.knn_every_epochs=0",
]


def _eval_batch(config, source, size: int = 64, seed: int = 5) -> np.ndarray:
    transform = EvalTransform.from_config(config)
    images = source.shuffled(seed).map(lambda image, _: transform(image)).batch(size)
    return next(iter(images)).numpy()


def _mode_gap(backbone: keras.Model, images: np.ndarray) -> float:
    """|inference - training| / |training| of the pooled features of one batch."""
    inference = backbone(images, training=False).numpy()
    saved = [variable.numpy() for variable in backbone.non_trainable_variables]
    training = backbone(images, training=True).numpy()
    for variable, value in zip(backbone.non_trainable_variables, saved, strict=True):
        variable.assign(value)
    return float(np.linalg.norm(inference - training) / np.linalg.norm(training))


def _batch_noise(backbone: keras.Model, images: np.ndarray, others: np.ndarray) -> float:
    """How much training-mode features of half a batch move when the other half changes.

    What inference mode cannot do better than: one set of statistics against
    each batch's own.
    """
    half = len(images) // 2
    saved = [variable.numpy() for variable in backbone.non_trainable_variables]
    alone = backbone(images, training=True).numpy()[:half]
    mixed = backbone(np.concatenate([images[:half], others[:half]]), training=True).numpy()[:half]
    for variable, value in zip(backbone.non_trainable_variables, saved, strict=True):
        variable.assign(value)
    return float(np.linalg.norm(alone - mixed) / np.linalg.norm(alone))


def test_recalibration_makes_inference_mode_match_training_mode_on_evaluated_images():
    config = load_config(QUICKSTART, [*TINY_RESNET, "train.precise_bn_batches=10"])
    source = source_from_config(config, config.data.source, config.data.split)
    keras.utils.set_random_seed(0)
    backbone = build_backbone("resnet18", 32, stem="cifar", width=4)
    images = _eval_batch(config, source)
    before = _mode_gap(backbone, images)
    assert source.num_examples >= 10 * 64  # 10 whole batches in one pass
    assert recalibrate_batchnorm(config, backbone, source) == 10
    after = _mode_gap(backbone, images)
    noise = _batch_noise(backbone, images, _eval_batch(config, source, seed=6))
    assert before > 5 * noise  # fresh statistics (0, 1): far from these images'
    assert after < 2 * noise, (before, after, noise)


def test_a_source_shorter_than_the_batches_gives_its_whole_batches():
    config = load_config(QUICKSTART, [*TINY_RESNET, "train.batch_size=500"])
    source = source_from_config(config, config.data.source, config.data.split)
    backbone = build_backbone("resnet18", 32, stem="cifar", width=4)
    assert recalibrate_batchnorm(config, backbone, source) == source.num_examples // 500


def test_zero_batches_leaves_the_statistics_alone():
    config = load_config(QUICKSTART, [*TINY_RESNET, "train.precise_bn_batches=0"])
    source = source_from_config(config, config.data.source, config.data.split)
    backbone = build_backbone("resnet18", 32, stem="cifar", width=4)
    before = [variable.numpy() for variable in backbone.non_trainable_variables]
    assert recalibrate_batchnorm(config, backbone, source) == 0
    for variable, value in zip(backbone.non_trainable_variables, before, strict=True):
        np.testing.assert_array_equal(variable.numpy(), value)


@pytest.mark.slow  # two training runs
def test_a_pretrained_resnet_is_saved_with_statistics_that_match_its_evaluated_images(tmp_path):
    gaps, noises = {}, {}
    for batches in (20, 0):
        run = tmp_path / f"run{batches}"
        overrides = [
            *TINY_RESNET,
            "train.epochs=1",
            "train.steps_per_epoch=3",
            f"train.precise_bn_batches={batches}",
        ]
        arguments = ["train", "--output", str(run)]
        for override in overrides:
            arguments += ["--set", override]
        assert main(arguments) == 0
        config = load_config(run / "config.yaml")
        source = source_from_config(config, config.data.source, config.data.split)
        summary = json.loads((run / "summary.json").read_text())
        assert summary["precise_bn_batches"] == min(batches, source.num_examples // 64)
        backbone = keras.saving.load_model(run / "backbone.keras", compile=False)
        images = _eval_batch(config, source)
        gaps[batches] = _mode_gap(backbone, images)
        noises[batches] = _batch_noise(backbone, images, _eval_batch(config, source, seed=6))
        model = load_model(run / "model.keras", compile=False)
        np.testing.assert_allclose(  # model.keras holds the same statistics
            model.online_backbone(_eval_batch(config, source), training=False),
            backbone(_eval_batch(config, source), training=False),
            rtol=1e-5,
            atol=1e-6,
        )
    assert gaps[20] < 2 * noises[20], (gaps, noises)
    assert gaps[0] > 5 * noises[0], (
        gaps,
        noises,
    )  # 3 steps at momentum 0.99 leave the (0, 1) start
