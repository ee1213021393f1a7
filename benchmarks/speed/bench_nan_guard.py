"""What the step's finite check of the BatchNorm statistics costs: paired rounds, one process.

Two BYOL models, equal but for the check (the other's `_nan_unless_statistics_finite`
returns the loss as it is), train the same in-memory view pairs; each round times
`--steps` steps of `fit` on each, alternating which goes first, after a warm-up that
traces both. The figure is the median over rounds of the time with the check over the
time without (1.0: free). On a shared CPU that ratio swings by more than the check can
cost, so the check is also timed alone (50 checks in one `tf.function`, called `--calls`
times) against the unchecked step's time. Two networks: the `tiny`
CNN (width 4, 16 px, batch 32), where the step is shortest and the check weighs most, and
ResNet-18 with the CIFAR stem at 32 px, batch 32.

```
python benchmarks/speed/bench_nan_guard.py --steps 5 --rounds 5
```
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for harness.py
from harness import Record, add_record_option  # noqa: E402

from byol_keras.methods.byol import BYOL  # noqa: E402
from byol_keras.nn.backbones import build_backbone  # noqa: E402

NETWORKS = {"tiny": ("tiny", 16, 4), "resnet18": ("resnet18", 32, 64)}  # name, px, width
BATCH = 32


def model(network: str, checked: bool) -> BYOL:
    name, size, width = NETWORKS[network]
    keras.utils.set_random_seed(0)
    byol = BYOL(build_backbone(name, size, width=width), projection_dim=64,
                projector_hidden_dim=256, predictor_hidden_dim=256)  # fmt: skip
    if not checked:
        byol._nan_unless_statistics_finite = lambda loss: loss
    byol.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9))
    return byol


def pairs(network: str) -> tf.data.Dataset:
    size = NETWORKS[network][1]
    rng = np.random.default_rng(0)
    views = rng.uniform(size=(2, BATCH * 4, size, size, 3)).astype("float32")
    return tf.data.Dataset.from_tensor_slices((views[0], views[1])).batch(BATCH).repeat()


def seconds(byol: BYOL, data: tf.data.Dataset, steps: int) -> float:
    started = time.perf_counter()
    byol.fit(data, epochs=1, steps_per_epoch=steps, verbose=0)
    return time.perf_counter() - started


def check_seconds(byol: BYOL, calls: int, per_graph: int = 50) -> float:
    """Seconds per check alone, on the model's own statistics: `per_graph` checks in one
    graph, whose outputs are summed so none is pruned, so that dispatch is not counted."""
    checks = tf.function(
        lambda: tf.add_n(
            [byol._nan_unless_statistics_finite(tf.constant(float(i))) for i in range(per_graph)]
        )
    )
    checks()
    started = time.perf_counter()
    for _ in range(calls):
        checks()
    return (time.perf_counter() - started) / (calls * per_graph)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=NETWORKS)
    add_record_option(parser)
    args = parser.parse_args()
    run = Record("bench_nan_guard", args.record)
    figures = {}
    for network in args.networks:
        data = pairs(network)
        sides = {"checked": model(network, True), "unchecked": model(network, False)}
        for byol in sides.values():
            seconds(byol, data, 2)  # traces the step
        ratios, unchecked = [], []
        for index in range(args.rounds):
            order = list(sides) if index % 2 == 0 else list(sides)[::-1]
            timed = {side: seconds(sides[side], data, args.steps) for side in order}
            ratios.append(timed["checked"] / timed["unchecked"])
            unchecked.append(timed["unchecked"] / args.steps)
            print(f"{network} round {index + 1}: checked {timed['checked']:.3f} s, "
                  f"unchecked {timed['unchecked']:.3f} s, ratio {ratios[-1]:.3f}")  # fmt: skip
        check_ms = 1e3 * check_seconds(sides["checked"], args.calls)
        step_ms = 1e3 * statistics.median(unchecked)
        figures[network] = {
            "ratios": [round(r, 4) for r in ratios],
            "median_ratio": round(statistics.median(ratios), 4),
            "check_alone_ms": round(check_ms, 4),
            "step_ms": round(step_ms, 2),
            "check_share_of_step": round(check_ms / step_ms, 6),
        }
        print(f"{network}: {figures[network]}")
    print(f"record: {run.write(**figures)}")


if __name__ == "__main__":
    main()
