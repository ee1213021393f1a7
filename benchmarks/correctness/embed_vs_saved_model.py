"""Compares `byol-keras embed` output with the exported SavedModel on the same files.

Reads the `.npy` and `.csv` that `embed` wrote, runs the SavedModel's serving
signature on each listed file (decoded with `tf.io.decode_image`, as uint8),
and prints the largest absolute difference next to the export tolerance rule
(`export.verify.tolerance` of the SavedModel's own outputs).

```
byol-keras embed --run RUN --data folder:/tmp/cifar10 --split test --output /tmp/test.npy
byol-keras export --run RUN
python benchmarks/correctness/embed_vs_saved_model.py --embeddings /tmp/test.npy \
    --saved-model RUN/export/byol_backbone/1
```
"""

import argparse
import csv
import sys
from pathlib import Path

import numpy as np
import tensorflow as tf

from byol_keras.export.verify import tolerance

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for harness.py
from harness import Record, add_record_option  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embeddings", required=True, help=".npy written by byol-keras embed")
    parser.add_argument("--saved-model", required=True, help="exported version folder")
    parser.add_argument("--batch-size", type=int, default=500)
    add_record_option(parser)
    args = parser.parse_args()
    run_record = Record("embed_vs_saved_model", args.record)

    embeddings = np.load(args.embeddings, mmap_mode="r")
    with open(args.embeddings[: -len(".npy")] + ".csv", newline="") as listing:
        paths = [row["path"] for row in csv.DictReader(listing)]
    serve = tf.saved_model.load(args.saved_model).signatures["serving_default"]
    worst, bound = 0.0, np.inf
    for start in range(0, len(paths), args.batch_size):
        batch = paths[start : start + args.batch_size]
        images = tf.stack([tf.io.decode_image(tf.io.read_file(p), channels=3) for p in batch])
        served = serve(images=images)["embeddings"].numpy()
        worst = max(worst, float(np.max(np.abs(served - embeddings[start : start + len(batch)]))))
        bound = min(bound, tolerance(served))
    print(
        f"rows={len(paths)} dim={embeddings.shape[1]} max_abs_diff={worst:.3e} "
        f"tolerance={bound:.3e} agree={worst <= bound}"
    )
    run_record.write(
        rows=len(paths), dim=embeddings.shape[1], max_abs_diff=worst, tolerance=bound,
        agree=bool(worst <= bound),
    )  # fmt: skip


if __name__ == "__main__":
    main()
