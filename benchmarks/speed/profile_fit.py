"""Profiles a few steps of `BYOL.fit` and prints the top TensorFlow op types by self time.

It builds `bench_train.py`'s model on in-memory view pairs, warms up (tracing
and the optimizer state), then records `--steps` steps of `fit` with
TensorFlow's profiler (every kernel: host tracer level 3) and reads the trace
(`*.xplane.pb`) with the XSpace protobuf that ships with TensorFlow. Op types
are ranked by summed self time; "% of step" is that time over the wall time of
the profiled steps (ops on parallel threads can add up to more than 100%).
xprof's own converter (`framework_op_stats`, TensorBoard's op table) was tried
and dropped: on these traces it counted a tenth of the `Mul` kernels the trace
holds.

```bash
python benchmarks/speed/profile_fit.py --batch 128 --steps 3
python benchmarks/speed/profile_fit.py --width 16 --batch 8 --hidden-dim 64 \
    --projection-dim 16 --steps 2                                              # seconds
```
"""

import argparse
import os
import re
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from bench_train import build_model, fit_rate, in_memory_pairs  # noqa: E402
from tensorflow.tsl.profiler.protobuf import xplane_pb2  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for harness.py
from harness import Record, add_record_option  # noqa: E402

OP_EVENT = re.compile(r"[^:]+:(\w+)")  # "scope/op_name:OpType"; C++ scopes have "::"


def op_type_self_times(xspace: Path) -> dict[str, tuple[float, int]]:
    """Summed self time (µs) and occurrences of every TF op type in a profile's host plane.

    An op kernel's event is named `op_name:OpType` and lies on the thread that ran
    it; its self time is its duration less that of the op events nested in it on
    the same thread (a function call's inner ops).
    """
    space = xplane_pb2.XSpace()
    space.ParseFromString(xspace.read_bytes())
    totals = defaultdict(lambda: [0.0, 0])
    for plane in space.planes:
        if plane.name != "/host:CPU":
            continue
        types = {}
        for key, metadata in plane.event_metadata.items():
            if match := OP_EVENT.fullmatch(metadata.name):
                types[key] = match.group(1)
        for line in plane.lines:
            ops = sorted(
                (e.offset_ps, e.offset_ps + e.duration_ps, types[e.metadata_id])
                for e in line.events
                if e.metadata_id in types
            )
            open_ops = []  # [end, op type, self time so far], outermost first
            for start, end, op_type in ops:
                while open_ops and open_ops[-1][0] <= start:
                    _close(open_ops.pop(), totals)
                if open_ops:
                    open_ops[-1][2] -= end - start
                open_ops.append([end, op_type, end - start])
            while open_ops:
                _close(open_ops.pop(), totals)
    return {name: (ps / 1e6, count) for name, (ps, count) in totals.items()}


def _close(op: list, totals: dict) -> None:
    _, op_type, self_ps = op
    totals[op_type][0] += self_ps
    totals[op_type][1] += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--size", type=int, default=32, help="image side in pixels")
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--hidden-dim", type=int, default=4096)
    parser.add_argument("--projection-dim", type=int, default=256)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--warmup-steps", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3, help="profiled steps")
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--host-tracer-level", type=int, default=3, choices=(1, 2, 3))
    parser.add_argument("--jit-compile", action="store_true")
    parser.add_argument("--fused-ema", action="store_true")
    parser.add_argument("--logdir", type=Path, help="where the trace goes (default: a temp dir)")
    add_record_option(parser)
    args = parser.parse_args()
    run_record = Record("profile_fit", args.record)
    keras.utils.set_random_seed(0)
    model = build_model(
        args.arch, args.size, args.width, args.hidden_dim, args.projection_dim,
        fused_ema=args.fused_ema,
    )  # fmt: skip
    model.compile(optimizer=keras.optimizers.SGD(0.06, momentum=0.9), jit_compile=args.jit_compile)
    _, _, pairs = in_memory_pairs(args.batch, args.size)
    fit_rate(model, pairs, args.warmup_steps, args.batch)
    logdir = args.logdir or Path(tempfile.mkdtemp(prefix="profile_fit-"))
    # Level 3 traces every kernel; level 2 leaves out those TF deems inexpensive,
    # which is where the per-op overhead of many small ops would hide.
    options = tf.profiler.experimental.ProfilerOptions(host_tracer_level=args.host_tracer_level)
    tf.profiler.experimental.start(str(logdir), options=options)
    start = time.perf_counter()
    fit_rate(model, pairs, args.steps, args.batch)
    wall_ms = (time.perf_counter() - start) * 1e3
    tf.profiler.experimental.stop()
    xspace = max(logdir.rglob("*.xplane.pb"), key=lambda p: p.stat().st_mtime)
    stats = sorted(op_type_self_times(xspace).items(), key=lambda item: -item[1][0])
    step_ms = wall_ms / args.steps
    print(
        f"{args.arch} width {args.width} {args.size}px batch {args.batch}, XLA "
        f"{args.jit_compile}, fused EMA {args.fused_ema}: {args.steps} profiled steps, "
        f"{step_ms:.1f} ms a step (wall, under the profiler); trace {xspace}"
    )
    print(f"{'op type':<40} {'count':>7} {'total ms':>10} {'ms/step':>9} {'% of step':>9}")
    for name, (us, count) in stats[: args.top]:
        share = 100 * us / 1e3 / wall_ms
        print(
            f"{name:<40} {count:>7} {us / 1e3:>10.1f} {us / 1e3 / args.steps:>9.1f} {share:>8.1f}%"
        )
    total_ms = sum(us for us, _ in dict(stats).values()) / 1e3
    print(
        f"all {len(stats)} op types: {total_ms:.1f} ms self time, "
        f"{100 * total_ms / wall_ms:.1f}% of the wall time"
    )
    run_record.write(
        settings={k: v for k, v in vars(args).items() if k not in ("record", "logdir")},
        step_ms=step_ms,
        op_types={name: {"self_ms": us / 1e3, "count": count} for name, (us, count) in stats},
    )


if __name__ == "__main__":
    main()
