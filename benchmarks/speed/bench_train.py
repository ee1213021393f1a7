"""BYOL training throughput: `model.fit` next to a plain tf.function loop doing the same maths.

Both paths train the same model object (ResNet-18 with the CIFAR stem,
projector and predictor 4096 → 256 by default) on the same in-memory view
pairs, so the input pipeline is out of the picture. Rounds alternate between
the two paths so that load from other jobs hits both alike; the fit/loop
ratio is the figure to compare.

```bash
python benchmarks/speed/bench_train.py                                 # float32
python benchmarks/speed/bench_train.py --precision mixed_bfloat16
python benchmarks/speed/bench_train.py --jit-compile
```

`in_memory_pairs`, `build_model` and `fit_rate` are this benchmark's pieces, which
`fit_vs_lightly_resnet.py` and `profile_fit.py` reuse.
"""

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from byol_keras import onednn  # noqa: E402

onednn.turn_on_unless_set()  # before TensorFlow, as `import byol_keras` does for a user

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from byol_keras.methods.byol import BYOL, cosine_tau  # noqa: E402
from byol_keras.nn.backbones import build_backbone  # noqa: E402
from byol_keras.nn.batchnorm import set_fused  # noqa: E402
from byol_keras.nn.losses import symmetric_byol_loss  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for harness.py
from harness import Record, add_record_option  # noqa: E402


def in_memory_pairs(batch_size: int, image_size: int, seed: int = 0):
    """Two random view batches held in memory, and a dataset repeating them as `fit` input.

    ```python
    view1, view2, pairs = in_memory_pairs(128, 32)
    ```
    """
    rng = np.random.default_rng(seed)
    shape = (batch_size, image_size, image_size, 3)
    view1 = tf.constant(rng.random(shape, dtype=np.float32))
    view2 = tf.constant(rng.random(shape, dtype=np.float32))
    # With autotune on, timed fit calls ended exactly 10.23 s (10 ms doubled ten
    # times, summed) after they began although training had finished earlier:
    # the autotune thread seems not to be woken when fit drops its iterator.
    options = tf.data.Options()
    options.autotune.enabled = False
    pairs = tf.data.Dataset.from_tensors((view1, view2)).repeat().with_options(options)
    return view1, view2, pairs


def build_model(
    backbone: str = "resnet18",
    image_size: int = 32,
    width: int = 64,
    hidden_dim: int = 4096,
    projection_dim: int = 256,
    fused_batchnorm: bool = True,
    **byol_options,
) -> BYOL:
    """The benchmarked BYOL: a `build_backbone` backbone (stem by image size) and 4096 → 256 heads.

    ```python
    model = build_model("resnet50", image_size=96, fused_ema=True)
    ```
    """
    model = BYOL(
        build_backbone(backbone, image_size=image_size, width=width),
        projection_dim=projection_dim,
        projector_hidden_dim=hidden_dim,
        predictor_hidden_dim=hidden_dim,
        total_steps=10_000,
        **byol_options,
    )
    return set_fused(model, fused_batchnorm)


def fit_rate(model: BYOL, pairs: tf.data.Dataset, steps: int, batch_size: int) -> float:
    """Images per second of one `model.fit` call of `steps` steps on `pairs`.

    ```python
    rate = fit_rate(model, pairs, steps=8, batch_size=128)
    ```
    """
    start = time.perf_counter()
    model.fit(pairs, epochs=1, steps_per_epoch=steps, verbose=0)
    return steps * batch_size / (time.perf_counter() - start)


def plain_loop_step(model: BYOL, jit_compile: bool):
    """One BYOL step written out by hand: what `BYOL.train_step` computes, without `fit`."""
    online = model.trainable_variables
    pairs = model._ema_pairs

    @tf.function(jit_compile=jit_compile)
    def step(view1, view2):
        z1_target = tf.stop_gradient(
            model.target_projector(model.target_backbone(view1, training=True), training=True)
        )
        z2_target = tf.stop_gradient(
            model.target_projector(model.target_backbone(view2, training=True), training=True)
        )
        with tf.GradientTape() as tape:
            z1 = model.online_projector(model.online_backbone(view1, training=True), training=True)
            z2 = model.online_projector(model.online_backbone(view2, training=True), training=True)
            q1 = model.predictor(z1, training=True)
            q2 = model.predictor(z2, training=True)
            loss = symmetric_byol_loss(q1, q2, z1_target, z2_target)
            scaled = model.optimizer.scale_loss(loss)
        gradients = tape.gradient(scaled, online)
        tau = cosine_tau(model.optimizer.iterations, model.total_steps, model.tau_base)
        model.optimizer.apply_gradients(zip(gradients, online, strict=True))
        for source, target in pairs:
            weight = tf.cast(tau, target.dtype)
            target.assign(weight * target + (1.0 - weight) * source)
        return loss

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--width", type=int, default=64, help="backbone base width")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--hidden-dim", type=int, default=4096)
    parser.add_argument("--projection-dim", type=int, default=256)
    parser.add_argument("--precision", default="float32")
    parser.add_argument("--jit-compile", action="store_true")
    parser.add_argument("--steps", type=int, default=8, help="steps per timed round")
    parser.add_argument("--rounds", type=int, default=3)
    add_record_option(parser)
    args = parser.parse_args()
    run_record = Record("bench_train", args.record)

    keras.config.set_dtype_policy(args.precision)
    keras.utils.set_random_seed(0)
    view1, view2, pairs = in_memory_pairs(args.batch_size, args.image_size)
    model = build_model(
        args.backbone, args.image_size, args.width, args.hidden_dim, args.projection_dim
    )
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), jit_compile=args.jit_compile)
    loop_step = plain_loop_step(model, args.jit_compile)

    def run_fit() -> float:
        return fit_rate(model, pairs, args.steps, args.batch_size)

    def run_loop() -> float:
        start = time.perf_counter()
        for _ in range(args.steps):
            loss = loop_step(view1, view2)
        float(loss)  # waits for the last step
        return args.steps * args.batch_size / (time.perf_counter() - start)

    print(
        f"TF {tf.__version__}, Keras {keras.__version__}, {os.cpu_count()} CPUs "
        f"({platform.machine()}), {args.backbone} width {args.width} {args.image_size}px "
        f"batch {args.batch_size}, "
        f"heads {args.hidden_dim}->{args.projection_dim}, {args.precision}, "
        f"XLA {'on' if args.jit_compile else 'off'}, load average "
        f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}"
    )
    # Warm-up: traces both functions and builds the optimizer state.
    model.fit(pairs, epochs=1, steps_per_epoch=2, verbose=0)
    float(loop_step(view1, view2))
    fit_rates, loop_rates = [], []
    for round_index in range(args.rounds):
        # Alternate which path goes first so drift in machine load cancels.
        order = (run_fit, run_loop) if round_index % 2 == 0 else (run_loop, run_fit)
        for run in order:
            (fit_rates if run is run_fit else loop_rates).append(run())
        print(
            f"round {round_index + 1}: fit {fit_rates[-1]:.1f} img/s, "
            f"loop {loop_rates[-1]:.1f} img/s, ratio {fit_rates[-1] / loop_rates[-1]:.3f}"
        )
    fit_median, loop_median = statistics.median(fit_rates), statistics.median(loop_rates)
    print(
        f"median: fit {fit_median:.1f} img/s, plain loop {loop_median:.1f} img/s, "
        f"fit/loop {fit_median / loop_median:.3f}; load average now "
        f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}"
    )
    run_record.write(
        fit_img_per_s=fit_rates,
        loop_img_per_s=loop_rates,
        fit_median_img_per_s=fit_median,
        loop_median_img_per_s=loop_median,
        fit_over_loop=fit_median / loop_median,
    )


if __name__ == "__main__":
    main()
