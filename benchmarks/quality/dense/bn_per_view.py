"""A run's BatchNorm statistics against its own pretraining views, view 1 and view 2 apart.

For each BatchNorm of the run's `backbone.keras`: the median over channels of
the batch variance of its input (training mode) over its moving variance, on
one batch of view 1, of view 2 and of both; then the RMS of the last stage's
output in training and in inference mode. BYOL's view 1 is always blurred and
view 2 rarely, so statistics that average the two fit neither.

```bash
python benchmarks/quality/dense/bn_per_view.py runs/bccd
```
"""

import sys

import keras
import numpy as np
import tensorflow as tf

from byol_keras.config import load_config
from byol_keras.data import source_from_config
from byol_keras.nn.backbones import all_layers
from byol_keras.pretrain import _views


def main(run: str) -> None:
    config = load_config(f"{run}/config.yaml")
    source = source_from_config(config, config.data.source, config.data.split)
    _, batches = _views(config, source)
    view1, view2 = next(iter(batches))
    backbone = keras.saving.load_model(f"{run}/backbone.keras", compile=False)
    norms = [x for x in all_layers(backbone) if isinstance(x, keras.layers.BatchNormalization)]
    last = backbone.layers[-2].output  # the last block's output, before the pooling
    probe = keras.Model(backbone.inputs, [norm.input for norm in norms] + [last])
    views = {"view1": view1, "view2": view2, "both": tf.concat([view1, view2], 0)}

    def variance_ratios(images) -> list[float]:
        inputs = probe(images, training=True)[:-1]
        return [
            float(
                np.median(
                    np.var(x.numpy().reshape(-1, x.shape[-1]), 0) / norm.moving_variance.numpy()
                )
            )
            for norm, x in zip(norms, inputs, strict=True)
        ]

    ratios = {name: variance_ratios(images) for name, images in views.items()}
    print(f"{'layer':28s} " + " ".join(f"{name:>7s}" for name in views))
    for index, norm in enumerate(norms):
        print(f"{norm.name:28s} " + " ".join(f"{ratios[n][index]:7.2f}" for n in views))
    for name, images in views.items():
        rms = [
            float(tf.sqrt(tf.reduce_mean(probe(images, training=t)[-1] ** 2)))
            for t in (True, False)
        ]
        print(f"last stage RMS on {name}: training {rms[0]:.3f}, inference {rms[1]:.3f}")


if __name__ == "__main__":
    main(sys.argv[1])
