"""Per-batch time of our crop and blur layers next to KerasCV 0.9's, each in a tf.function.

The comparison behind `byol_keras/augment/layers.py`'s own crop and blur:
KerasCV's `RandomCropAndResize` and `RandomGaussianBlur` against ours on the
same random float images, alternating one call of each per round so that load
on a shared machine hits both alike; the median milliseconds per batch and
their ratio are the figures. KerasCV's crop is also timed eagerly, as a
tf.data map without `tf.function` would run it.

```bash
python benchmarks/speed/bench_augment_layers.py --batch-size 256 --image-size 32 --rounds 20
```
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras_cv  # noqa: E402
import tensorflow as tf  # noqa: E402

from byol_keras.augment.layers import (  # noqa: E402
    RandomGaussianBlur,
    RandomResizedCrop,
    default_blur_kernel_size,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for harness.py
from harness import Record, add_record_option  # noqa: E402


def milliseconds(function, images: tf.Tensor) -> float:
    """Wall milliseconds of one call, waiting for its result."""
    start = time.perf_counter()
    function(images).numpy()
    return 1000 * (time.perf_counter() - start)


def compare(ours, theirs, images: tf.Tensor, rounds: int, warmup: int) -> dict:
    """Median ms per batch of two callables, alternated round by round after `warmup` calls."""
    for _ in range(warmup):  # traces both
        ours(images).numpy()
        theirs(images).numpy()
    times = {"ours": [], "keras_cv": []}
    for round_index in range(rounds):
        order = (("ours", ours), ("keras_cv", theirs))
        for name, function in order if round_index % 2 == 0 else order[::-1]:
            times[name].append(milliseconds(function, images))
    ours_ms, theirs_ms = statistics.median(times["ours"]), statistics.median(times["keras_cv"])
    return {"ours_ms": ours_ms, "keras_cv_ms": theirs_ms, "keras_cv_over_ours": theirs_ms / ours_ms}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    add_record_option(parser)
    args = parser.parse_args()
    run_record = Record("bench_augment_layers", args.record)

    size = args.image_size
    images = tf.random.stateless_uniform([args.batch_size, size, size, 3], seed=[0, 0])
    crop = RandomResizedCrop(size, area=(0.08, 1.0), seed=0)
    their_crop = keras_cv.layers.RandomCropAndResize(
        target_size=(size, size), crop_area_factor=(0.08, 1.0), aspect_ratio_factor=(3 / 4, 4 / 3)
    )
    kernel = default_blur_kernel_size(size)
    blur = RandomGaussianBlur(kernel, sigma=(0.1, 2.0), prob=1.0, seed=0)
    their_blur = keras_cv.layers.RandomGaussianBlur(kernel_size=kernel, factor=(0.1, 2.0))

    def graph(layer):
        return tf.function(lambda batch: layer(batch, training=True))

    figures = {
        "crop": compare(graph(crop), graph(their_crop), images, args.rounds, args.warmup),
        "blur": compare(graph(blur), graph(their_blur), images, args.rounds, args.warmup),
    }
    eager = [milliseconds(lambda b: their_crop(b, training=True), images) for _ in range(3)]
    figures["keras_cv_crop_eager_ms"] = statistics.median(eager)

    print(
        f"tensorflow {tf.__version__}, keras-cv {keras_cv.__version__}, {os.cpu_count()} CPUs, "
        f"{args.batch_size} images {size}x{size}, {args.rounds} alternating rounds, "
        f"blur kernel {kernel}"
    )
    for name in ("crop", "blur"):
        result = figures[name]
        print(
            f"{name}: ours {result['ours_ms']:.1f} ms, KerasCV {result['keras_cv_ms']:.1f} ms per "
            f"batch (KerasCV / ours {result['keras_cv_over_ours']:.2f})"
        )
    print(f"KerasCV crop run eagerly: {figures['keras_cv_crop_eager_ms']:.0f} ms per batch")
    run_record.write(**figures)


if __name__ == "__main__":
    main()
