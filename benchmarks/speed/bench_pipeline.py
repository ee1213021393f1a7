"""Throughput of the BYOL view-pair tf.data pipeline, next to the same one without augmentation.

The input is an in-memory set of random uint8 CIFAR-like images: every
augmentation op costs the same whatever the pixel values, so real images would
not change the figures.

```bash
python benchmarks/speed/bench_pipeline.py --image-size 32 --batch-size 256 --steps 50
```
"""

import argparse
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import keras_cv  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from byol_keras.augment import image_batches, make_augmenter, pair_dataset  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for harness.py
from harness import Record, add_record_option  # noqa: E402


def pairs_per_second(dataset: tf.data.Dataset, batch_size: int, steps: int, warmup: int) -> float:
    """View pairs (or images) per second over `steps` batches, after `warmup` batches."""
    iterator = iter(dataset)
    for _ in range(warmup):  # fills the shuffle buffer and traces the map functions
        next(iterator)
    start = time.perf_counter()
    for _ in range(steps):
        next(iterator)
    return steps * batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--examples", type=int, default=50_000, help="in-memory images")
    parser.add_argument("--preset", default="byol", choices=("byol", "cifar", "digits"))
    parser.add_argument("--seed", type=int, default=0)
    add_record_option(parser)
    args = parser.parse_args()
    run_record = Record("bench_pipeline", args.record)

    size = args.image_size
    pixels = np.random.default_rng(args.seed).integers(
        0, 256, size=(args.examples, size, size, 3), dtype=np.uint8
    )
    labels = np.zeros(args.examples, dtype=np.int32)
    source = tf.data.Dataset.from_tensor_slices((pixels, labels))
    augmenter = make_augmenter(args.preset, image_size=size, seed=args.seed)

    print(
        f"TF {tf.__version__}, Keras {keras.__version__}, KerasCV {keras_cv.__version__}, "
        f"{os.cpu_count()} CPUs ({platform.machine()}), load average "
        f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}"
    )
    print(
        f"{args.examples} uint8 images {size}x{size}, batch {args.batch_size}, "
        f"{args.steps} timed steps after {args.warmup} warm-up, preset {args.preset!r}"
    )

    plain = image_batches(source, args.batch_size, seed=args.seed).map(
        lambda batch: (batch, batch), num_parallel_calls=tf.data.AUTOTUNE
    )
    no_augment = pairs_per_second(plain, args.batch_size, args.steps, args.warmup)
    print(f"  no augmentation (shuffle, batch, to float):  {no_augment:9.0f} pairs/s")

    pairs = pair_dataset(source, augmenter, args.batch_size, seed=args.seed)
    augmented = pairs_per_second(pairs, args.batch_size, args.steps, args.warmup)
    print(f"  augmented in tf.data (pair_dataset):          {augmented:9.0f} pairs/s")

    # The on-device option on this machine: the augmenter in a compiled step.
    step = tf.function(lambda batch: augmenter(batch, training=True))
    on_device = image_batches(source, args.batch_size, seed=args.seed)
    iterator = iter(on_device)
    for _ in range(args.warmup):
        step(next(iterator))
    start = time.perf_counter()
    for _ in range(args.steps):
        view1, _ = step(next(iterator))
    view1.numpy()  # waits for the last step
    in_step = args.steps * args.batch_size / (time.perf_counter() - start)
    print(f"  augmented in a tf.function step (on device):  {in_step:9.0f} pairs/s")
    print(f"  augmented / no augmentation (tf.data):        {augmented / no_augment:9.3f}")
    run_record.write(
        no_augmentation_pairs_per_s=no_augment,
        pair_dataset_pairs_per_s=augmented,
        in_step_pairs_per_s=in_step,
        augmented_over_no_augmentation=augmented / no_augment,
    )


if __name__ == "__main__":
    main()
