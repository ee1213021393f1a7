"""BYOL.fit against lightly 1.6 on the same ResNet, alternating rounds: img/s and their ratio.

Each round times `--steps` steps of `BYOL.fit` on in-memory view pairs
(`bench_train.py`'s model and pairs, SGD with momentum, float32) and the same
steps of the lightly peer (`lightly_resnet_throughput.py`, run with `$PEER_PY`),
alternating which goes first; it prints each round's img/s and ratio, then the
medians, and writes a harness record. Before timing it compares the parameter
counts of the two networks and refuses to run if they differ.

Levers for the byol-keras side: `--jit-compile`, `--steps-per-execution N`,
`--fused-ema`, `--keras-batchnorm` (Keras's BatchNorm ops instead of the
fused kernel), `--intra-threads/--inter-threads` (process-wide). With
`--paired-default`, each round also times a second model with none of the
in-process levers, in this process, so a lever is read against its own
same-run default. `--env KEY=VALUE` sets a variable for both sides before
either starts (e.g. `ONEDNN_MAX_CPU_ISA=AVX2`; torch also reads
`ATEN_CPU_CAPABILITY=avx2`, XLA `XLA_FLAGS=--xla_cpu_max_isa=AVX2`).

```bash
source ../shared/bench/lightly_env.sh
python benchmarks/speed/fit_vs_lightly_resnet.py --arch resnet18 --size 32 --batch 128 --steps 3
python benchmarks/speed/fit_vs_lightly_resnet.py --arch resnet50 --size 96 --batch 32 \
    --env ONEDNN_MAX_CPU_ISA=AVX2 --env ATEN_CPU_CAPABILITY=avx2
python benchmarks/speed/fit_vs_lightly_resnet.py --jit-compile --paired-default --no-peer
```
"""

import argparse
import math
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PEER = HERE / "lightly_resnet_throughput.py"
# The settings that change which kernels either side runs, kept in the record.
SPEED_ENV = (
    "ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "XLA_FLAGS", "TF_ENABLE_ONEDNN_OPTS",
    "OMP_NUM_THREADS",
)  # fmt: skip


def peer(args: argparse.Namespace, *extra: str) -> str:
    """The peer's output for these settings; exits with its error if it fails."""
    command = [args.peer_python, str(PEER), "--arch", args.arch, "--size", str(args.size)]
    command += ["--batch", str(args.batch), "--threads", str(args.peer_threads), *extra]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"fit_vs_lightly_resnet: the peer failed: {done.stderr.strip()[-500:]}")
    return done.stdout


def parameter_counts(model) -> dict[str, int]:
    """Trained parameters of backbone, projector and predictor, as the peer counts them."""
    nets = {"backbone": model.online_backbone, "projector": model.online_projector}
    nets["predictor"] = model.predictor
    return {
        name: sum(math.prod(v.shape) for v in net.trainable_weights) for name, net in nets.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=("resnet18", "resnet50"), default="resnet18")
    parser.add_argument("--size", type=int, default=32, help="image side in pixels")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per leg and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jit-compile", action="store_true")
    parser.add_argument("--steps-per-execution", type=int, default=1)
    parser.add_argument("--fused-ema", action="store_true")
    parser.add_argument(
        "--keras-batchnorm",
        action="store_true",
        help="Keras's BatchNorm ops instead of the fused kernel (the default)",
    )
    parser.add_argument("--intra-threads", type=int, help="TF intra-op threads (default: TF's)")
    parser.add_argument("--inter-threads", type=int, help="TF inter-op threads (default: TF's)")
    parser.add_argument("--paired-default", action="store_true",
                        help="also time a default model in this process every round")  # fmt: skip
    parser.add_argument("--no-peer", action="store_true", help="leave the lightly legs out")
    parser.add_argument("--peer-threads", type=int, default=2)
    parser.add_argument("--peer-python", default=os.environ.get("PEER_PY"))
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--label", default="", help="a name for this setting in the record")
    sys.path.insert(0, str(HERE.parent))  # benchmarks/, for harness.py
    from harness import Record, add_record_option

    add_record_option(parser)
    args = parser.parse_args()
    if args.steps % args.steps_per_execution:
        parser.error("--steps must be a multiple of --steps-per-execution")
    if not args.no_peer and not args.peer_python:
        parser.error("no peer Python: source ../shared/bench/lightly_env.sh or pass --peer-python")
    for setting in args.env:
        key, separator, value = setting.partition("=")
        if not separator or not key:
            parser.error(f"--env: expected KEY=VALUE, got {setting!r}")
        os.environ[key] = value
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    run_record = Record(
        f"fit_vs_lightly_resnet{'-' + args.label if args.label else ''}", args.record
    )

    # TensorFlow starts only now, with the environment and the thread counts set, and with
    # the default (oneDNN on) that `import byol_keras` gives a user.
    from byol_keras import onednn

    onednn.turn_on_unless_set()
    import keras
    import tensorflow as tf
    from bench_train import build_model, fit_rate, in_memory_pairs

    if args.intra_threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.intra_threads)
    if args.inter_threads:
        tf.config.threading.set_inter_op_parallelism_threads(args.inter_threads)

    def compiled(levers: bool):
        keras.utils.set_random_seed(0)
        model = build_model(
            args.arch,
            args.size,
            fused_ema=levers and args.fused_ema,
            fused_batchnorm=not (levers and args.keras_batchnorm),
        )
        model.compile(
            optimizer=keras.optimizers.SGD(0.06, momentum=0.9),
            jit_compile=levers and args.jit_compile,
            steps_per_execution=args.steps_per_execution if levers else 1,
        )
        return model

    model = compiled(levers=True)
    ours = parameter_counts(model)
    print("byol-keras params " + " ".join(f"{k}={v}" for k, v in ours.items()))
    if not args.no_peer:
        output = peer(args, "--count-only")
        print(output.strip())
        line = next(x for x in output.splitlines() if x.startswith("peer_lightly params"))
        theirs = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)}
        if theirs != ours:
            sys.exit(f"fit_vs_lightly_resnet: not the same network: {ours} against {theirs}")
    _, _, pairs = in_memory_pairs(args.batch, args.size)
    legs = {"byol_keras": lambda: fit_rate(model, pairs, args.steps, args.batch)}
    if args.paired_default:
        default = compiled(levers=False)
        legs["default"] = lambda: fit_rate(default, pairs, args.steps, args.batch)
    if not args.no_peer:
        legs["lightly"] = lambda: _peer_rate(args)
    # Warm-up: traces (and with XLA compiles) each function and builds the optimizer state.
    fit_rate(model, pairs, args.steps_per_execution, args.batch)
    if args.paired_default:
        fit_rate(default, pairs, 1, args.batch)
    print(
        f"TF {tf.__version__}, {args.arch} {args.size}px batch {args.batch}, {args.steps} steps "
        f"a leg; levers: XLA {args.jit_compile}, steps_per_execution {args.steps_per_execution}, "
        f"fused EMA {args.fused_ema}, Keras BatchNorm {args.keras_batchnorm}, threads intra "
        f"{args.intra_threads} inter {args.inter_threads}; "
        + " ".join(f"{k}={os.environ[k]}" for k in SPEED_ENV if k in os.environ)
    )  # fmt: skip
    rates = {name: [] for name in legs}
    for round_index in range(args.rounds):
        # Rotate which leg goes first so drift in machine load spreads over all.
        names = list(legs)[round_index % len(legs) :] + list(legs)[: round_index % len(legs)]
        for name in names:
            rates[name].append(legs[name]())
        print(f"round {round_index + 1}: " + _ratios({k: v[-1] for k, v in rates.items()}))
    medians = {name: statistics.median(values) for name, values in rates.items()}
    ratios = {
        f"{name}_over_{other}": statistics.median(
            a / b for a, b in zip(rates[name], rates[other], strict=True)
        )
        for name, other in (("byol_keras", "lightly"), ("byol_keras", "default"),
                            ("default", "lightly"))
        if name in rates and other in rates
    }  # fmt: skip
    print("median: " + _ratios(medians) + "; median of round ratios: "
          + ", ".join(f"{k} {v:.3f}" for k, v in ratios.items()))  # fmt: skip
    run_record.write(
        settings={k: v for k, v in vars(args).items() if k not in ("record", "peer_python")},
        environment={k: os.environ[k] for k in SPEED_ENV if k in os.environ},
        parameters=ours,
        img_per_s=rates,
        median_img_per_s=medians,
        **ratios,
    )


def _peer_rate(args: argparse.Namespace) -> float:
    output = peer(args, "--steps", str(args.steps))
    return float(re.search(r"imgs_per_s=([0-9.]+)", output).group(1))


def _ratios(rates: dict[str, float]) -> str:
    text = ", ".join(f"{name} {rate:.2f} img/s" for name, rate in rates.items())
    if "lightly" in rates:
        text += f", byol-keras/lightly {rates['byol_keras'] / rates['lightly']:.3f}"
    if "default" in rates:
        text += f", lever/default {rates['byol_keras'] / rates['default']:.3f}"
    return text


if __name__ == "__main__":
    main()
