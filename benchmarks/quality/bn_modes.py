"""A pretrained backbone's features in inference mode against training mode.

For each pyramid level of `RUN/backbone.keras`, the RMS of the features in
training mode (batch statistics) and in inference mode (the moving statistics
that kNN, the linear probe, `embed` and the exports use), on batches made as
the run's pretraining made them (its config.yaml): view 1, view 2, both views
together, and the training images as the evaluation transform gives them to
inference. Then the same after re-estimating the BatchNorm statistics on
`BATCHES` batches of the evaluation-transformed images (PreciseBN), as
pretraining now does at its end (`train.precise_bn_batches`). A ratio near 1
means inference mode computes what training mode computes on such a batch.

    python benchmarks/quality/bn_modes.py RUN [BATCHES (default 8)] [SPLIT]

SPLIT (default the run's `data.split`) is where the measured batches come from,
e.g. `test` for images the re-estimation never saw; the statistics are always
re-estimated on the run's own split, as pretraining does.
"""

import sys

import keras
import numpy as np

from byol_keras.augment.eval_transform import EvalTransform
from byol_keras.augment.pipelines import make_augmenter, pair_dataset
from byol_keras.config import load_config
from byol_keras.data import source_from_config
from byol_keras.nn.precise_bn import PreciseBN
from byol_keras.transfer.pyramid import feature_pyramid


def _named_batches(config, source, batches: int, seed: int) -> list:
    augmenter = make_augmenter(
        config.augment.preset,
        image_size=config.data.image_size,
        seed=seed,
        **config.augment.overrides(),
    )
    size = config.train.batch_size
    pairs = pair_dataset(source, augmenter=augmenter, batch_size=size, seed=seed)
    transform = EvalTransform.from_config(config)
    images = source.shuffled(seed).map(lambda image, _: transform(image))
    named = []
    eval_batches = images.batch(size).take(batches)
    for (view1, view2), evaluated in zip(pairs.take(batches), eval_batches, strict=False):
        named.append(
            [
                ("view 1", view1),
                ("view 2", view2),
                ("both", np.concatenate([view1, view2])),
                ("eval", evaluated),
            ]
        )
    return named


def rms_by_mode(pyramid: keras.Model, named_batches: list) -> dict:
    """{(batch kind, level): (training RMS, inference RMS)} over all the batches."""
    squares: dict = {}
    saved = [variable.numpy() for variable in pyramid.non_trainable_variables]
    # Inference mode first: a training-mode call moves the moving averages it would read.
    for mode, training in (("inference", False), ("training", True)):
        for named in named_batches:
            for kind, images in named:
                for level, maps in pyramid(images, training=training).items():
                    squares.setdefault((kind, level, mode), []).append(
                        float(np.mean(np.square(maps)))
                    )
    for variable, value in zip(pyramid.non_trainable_variables, saved, strict=True):
        variable.assign(value)
    return {
        (kind, level): tuple(
            float(np.sqrt(np.mean(squares[(kind, level, mode)])))
            for mode in ("training", "inference")
        )
        for kind, level, mode in squares
        if mode == "training"
    }


def _print(title: str, result: dict) -> None:
    print(title)
    for (kind, level), (training, inference) in sorted(
        result.items(), key=lambda item: (item[0][0], int(item[0][1].split("_")[1]))
    ):
        ratio = inference / training
        print(f"  {kind:7s} {level:10s} {training:8.3f} {inference:8.3f}  ({ratio:.2f})")


if __name__ == "__main__":
    run = sys.argv[1]
    batches = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    config = load_config(f"{run}/config.yaml")
    source = source_from_config(config, config.data.source, config.data.split)
    split = sys.argv[3] if len(sys.argv) > 3 else config.data.split
    measured = source_from_config(config, config.data.source, split)
    named_batches = _named_batches(config, measured, batches, seed=1)
    backbone = keras.saving.load_model(f"{run}/backbone.keras", compile=False)
    pyramid = feature_pyramid(backbone)
    header = "feature RMS, training mode / inference mode (inference / training)"
    _print(
        f"{run}, {split} images, statistics as saved: {header}", rms_by_mode(pyramid, named_batches)
    )
    count = PreciseBN(backbone)(
        [named[-1][1] for named in _named_batches(config, source, batches, seed=2)], batches
    )
    _print(
        f"{run}, {split} images, statistics re-estimated on {count} eval batches: {header}",
        rms_by_mode(pyramid, named_batches),
    )
