"""The end of pretraining: BatchNorm statistics for the images inference will see."""

import logging

import keras
import tensorflow as tf

from byol_keras.augment.eval_transform import EvalTransform
from byol_keras.config import Config
from byol_keras.data import ImageSource
from byol_keras.nn.precise_bn import PreciseBN

log = logging.getLogger(__name__)


def recalibrate_batchnorm(config: Config, backbone: keras.Model, source: ImageSource) -> int:
    """Re-estimates the backbone's BatchNorm statistics on training images as inference sees them.

    Training normalises each view with its own batch's statistics, and the
    moving averages hold their mean, which fits neither view nor the images
    that kNN, the linear probe, `embed` and the exports feed through the
    evaluation transform. A ResNet-18 pretrained on BCCD then had 0.16 times
    its training-mode feature RMS at stride 32 on such images, in inference
    mode; with the statistics re-estimated on them, 1.06
    (benchmarks/RESULTS.md, issue 29). The statistics become PreciseBN's
    average over `train.precise_bn_batches` batches of `train.batch_size`
    images (fewer if one pass over the source ends sooner); no weight changes.

    Returns:
        The number of batches averaged (0: `train.precise_bn_batches` is 0).

    ```python
    # doctest: slow
    from byol_keras.config import load_config
    from byol_keras.data import source_from_config

    config = load_config("runs/quickstart/config.yaml")
    backbone = keras.saving.load_model("runs/quickstart/backbone.keras")
    source = source_from_config(config, config.data.source, config.data.split)
    batches = recalibrate_batchnorm(config, backbone, source)  # whole batches, at most 20
    assert batches == min(20, source.num_examples // config.train.batch_size)
    ```
    """
    if not config.train.precise_bn_batches:
        return 0
    transform = EvalTransform.from_config(config)
    images = (
        source.shuffled(config.train.seed)
        .map(lambda image, _: transform(image), num_parallel_calls=tf.data.AUTOTUNE)
        # A short last batch would count as much as a whole one in the average.
        .batch(
            config.train.batch_size, drop_remainder=source.num_examples >= config.train.batch_size
        )
        .prefetch(1)
    )
    count = PreciseBN(backbone)(images, config.train.precise_bn_batches)
    log.info(
        "BatchNorm statistics re-estimated on %d batches of evaluation-transformed images", count
    )
    return count
