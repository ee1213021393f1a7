"""Checks that a speed lever leaves BYOL's training losses unchanged: 20 steps on and off.

Each setting trains in its own process (so thread counts take effect) with
deterministic ops (but for `jit-compile`: Keras runs no XLA under them) and
the same seed, weights and batches; the per-step losses
(fit's running mean, at every step both runs report) must agree within
`--rtol` (1e-4 relative by default), else it exits 1. A lever is a `BYOL.fit`
option: `fused-ema`, `fused-batchnorm` (on by default: off runs Keras's
BatchNorm ops), `jit-compile`, `steps-per-execution=N`, `intra-threads=N`
or `inter-threads=N`; `onednn` runs the two processes with
`TF_ENABLE_ONEDNN_OPTS=1` and `=0`. The control `ulp` changes no setting but moves every
target weight by one unit in the last place before the first step: how far
rounding alone drifts the losses of this network in this many steps, the
floor below which no lever can be judged (on the tiny default network it is
2e-3 after 20 steps: training amplifies a one-ulp difference that much).

```bash
python benchmarks/correctness/lever_parity.py fused-ema                    # tiny ResNet-18
python benchmarks/correctness/lever_parity.py ulp                          # rounding's own drift
python benchmarks/correctness/lever_parity.py onednn                       # TensorFlow's kernels
python benchmarks/correctness/lever_parity.py jit-compile --width 64 --image-size 32 --batch 128
```
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for harness.py
from harness import Record, add_record_option  # noqa: E402

LEVERS = (
    "fused-ema", "fused-batchnorm", "jit-compile", "steps-per-execution", "intra-threads",
    "inter-threads", "ulp", "onednn",
)  # fmt: skip


def losses(args: argparse.Namespace, lever: str | None) -> dict[int, float]:
    """fit's logged loss (the running mean over the epoch) after each step, with `lever` on."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import numpy as np
    import tensorflow as tf

    from byol_keras.methods.byol import BYOL
    from byol_keras.nn.backbones import build_backbone
    from byol_keras.nn.batchnorm import set_fused

    name, _, value = (lever or "").partition("=")
    if name == "intra-threads":
        tf.config.threading.set_intra_op_parallelism_threads(int(value))
    if name == "inter-threads":
        tf.config.threading.set_inter_op_parallelism_threads(int(value))
    if args.lever != "jit-compile":
        # Keras turns XLA off under op determinism, so the XLA pair runs without it.
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(0)
    model = BYOL(
        build_backbone(args.backbone, image_size=args.image_size, width=args.width),
        projection_dim=args.projection_dim,
        projector_hidden_dim=args.hidden_dim,
        predictor_hidden_dim=args.hidden_dim,
        total_steps=args.steps,
        fused_ema=name == "fused-ema",
    )
    if args.lever == "fused-batchnorm":
        set_fused(model, fused=name == "fused-batchnorm")
    if name == "ulp":
        for _, target in model._ema_pairs:
            target.assign(np.nextafter(target.numpy(), np.float32(np.inf)))
    model.compile(
        optimizer=keras.optimizers.SGD(args.lr, momentum=0.9),
        jit_compile=name == "jit-compile",
        steps_per_execution=int(value) if name == "steps-per-execution" else 1,
    )
    if model.jit_compile != (name == "jit-compile"):
        raise SystemExit(f"lever_parity: Keras set jit_compile={model.jit_compile} for {lever}")
    rng = np.random.default_rng(1)
    shape = (args.steps * args.batch, args.image_size, args.image_size, 3)
    views = rng.random(shape, dtype=np.float32), rng.random(shape, dtype=np.float32)
    logged = {}
    # With steps_per_execution = N, fit reports once per N steps, at the last of them.
    record = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda step, logs: logged.update({step: float(logs["loss"])})
    )
    pairs = tf.data.Dataset.from_tensor_slices(views).batch(args.batch)
    model.fit(pairs, epochs=1, verbose=0, callbacks=[record])
    return logged


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lever", help=f"one of {', '.join(LEVERS)}, with =N where it takes one")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--hidden-dim", type=int, default=64)
    parser.add_argument("--projection-dim", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--rtol", type=float, default=1e-4)
    parser.add_argument("--child", choices=("off", "on"), help=argparse.SUPPRESS)
    add_record_option(parser)
    args = parser.parse_args()
    if args.lever.partition("=")[0] not in LEVERS:
        parser.error(f"unknown lever {args.lever!r}; expected one of {', '.join(LEVERS)}")
    if args.child:
        print(json.dumps(losses(args, args.lever if args.child == "on" else None)))
        return 0
    run_record = Record("lever_parity", args.record)
    runs = {}
    for setting in ("off", "on"):
        environment = dict(os.environ)
        if args.lever == "onednn":  # read once, when TensorFlow is imported
            environment["TF_ENABLE_ONEDNN_OPTS"] = "1" if setting == "on" else "0"
        child = subprocess.run(
            [sys.executable, *sys.argv, "--child", setting],
            capture_output=True,
            text=True,
            env=environment,
        )
        if child.returncode != 0:
            sys.stderr.write(child.stderr[-2000:])
            return child.returncode
        runs[setting] = json.loads(child.stdout.strip().splitlines()[-1])
    steps = sorted(set(runs["off"]) & set(runs["on"]), key=int)
    off, on = [runs["off"][s] for s in steps], [runs["on"][s] for s in steps]
    worst = max(abs(a - b) / max(abs(a), 1e-12) for a, b in zip(off, on, strict=True))
    print(f"{args.lever}: losses compared after {len(steps)} of {args.steps} steps, "
          f"off {off[0]:.6f}..{off[-1]:.6f}, on {on[0]:.6f}..{on[-1]:.6f}, "
          f"worst relative difference {worst:.2e}")  # fmt: skip
    same = worst <= args.rtol
    run_record.write(lever=args.lever, steps=steps, off=off, on=on, worst_relative=worst, same=same)
    print("same losses" if same else f"DIFFERENT losses (over {args.rtol:g})")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
