"""Whether PreciseBN's mean of batch variances explains a pretrained ResNet's inference blow-up.

Issue 29's inference-mode check: the last stage's RMS on held-out BCCD photos in training
mode (batch statistics), then in inference mode with four sets of moving statistics:
pretraining's, PreciseBN's (the mean of the batch variances), the population variance (the
law of total variance over the same batches) and cascaded population statistics (each layer's
measured with every earlier layer already in inference mode).

    python benchmarks/quality/dense/pop_var.py RUN_DIR [BATCH (default 8)] [PHOTOS_GLOB]

RUN_DIR is a `configs/bccd_cpu.yaml` run; the photos default to /tmp/bccd/bccd/JPEGImages.
"""

import glob
import sys

import keras
import numpy as np
from PIL import Image

import byol_keras
from byol_keras.nn.backbones import build_backbone
from byol_keras.nn.precise_bn import PreciseBN


def rms(x) -> float:
    return float(np.sqrt(np.mean(np.square(x))))


def photos(pattern: str, count: int = 96) -> np.ndarray:
    """`count` photos at 240×320, cropped to 240×256 and padded to 256×256, in [0, 1]."""
    files = sorted(glob.glob(pattern))
    pick = np.random.default_rng(0).choice(len(files), count, replace=False)
    images = np.stack(
        [
            np.asarray(Image.open(files[i]).convert("RGB").resize((320, 240)), "float32") / 255
            for i in pick
        ]
    )
    return np.pad(images[:, :, 32:288], ((0, 0), (0, 16), (0, 0), (0, 0)))


def main(run: str, batch: int, pattern: str) -> None:
    images = photos(pattern)
    saved = byol_keras.load_model(f"{run}/backbone.keras", compile=False)
    backbone = build_backbone("resnet18", 256, stem="imagenet", width=32)
    backbone.set_weights(saved.get_weights())
    probe = keras.Model(backbone.inputs, backbone.layers[-2].output)
    batches = [images[i : i + batch] for i in range(0, 64, batch)]
    held = images[64:]
    train_rms = np.mean([rms(probe(b, training=True)) for b in batches])
    print(f"batch {batch}: training mode (batch statistics) {train_rms:.3f}")
    print(f"inference, pretraining's moving statistics: {rms(probe(held)):.3f}")

    precise = PreciseBN(backbone, probe)
    precise(batches, len(batches))
    print(f"inference, PreciseBN (mean of batch variances): {rms(probe(held)):.3f}")

    norms = precise.norms
    for norm in norms:
        norm.momentum = 0.0  # each training-mode pass leaves exactly its batch's statistics
    means, variances = [[] for _ in norms], [[] for _ in norms]
    for b in batches:
        precise._step(b)
        for i, norm in enumerate(norms):
            means[i].append(norm.moving_mean.numpy())
            variances[i].append(norm.moving_variance.numpy())
    for i, norm in enumerate(norms):
        m, v = np.stack(means[i]), np.stack(variances[i])
        norm.moving_mean.assign(m.mean(0))
        norm.moving_variance.assign(v.mean(0) + m.var(0))
        norm.momentum = 0.99
    print(f"inference, population variance: {rms(probe(held)):.3f}")

    feeds = keras.Model(backbone.inputs, [norm.input for norm in norms])
    for i, norm in enumerate(norms):
        channels = norm.moving_mean.shape[0]
        xs = np.concatenate([feeds(b)[i].numpy().reshape(-1, channels) for b in batches])
        norm.moving_mean.assign(xs.mean(0))
        norm.moving_variance.assign(xs.var(0))
    print(f"inference, cascaded population statistics: {rms(probe(held)):.3f}")


if __name__ == "__main__":
    main(
        sys.argv[1],
        int(sys.argv[2]) if len(sys.argv) > 2 else 8,
        sys.argv[3] if len(sys.argv) > 3 else "/tmp/bccd/bccd/JPEGImages/*.jpg",
    )
