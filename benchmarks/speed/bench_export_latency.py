"""Per-batch CPU latency of the exported SavedModel (TensorFlow) and ONNX model (onnxruntime).

Both artifacts come from one `export_run` of the same run and are timed in
the same process on the same uint8 inputs, alternating one TensorFlow call
and one onnxruntime call per round so that load on a shared machine hits
both alike. Each call runs the whole serving function (scale, resize,
backbone, projector). Without `--run`, the script builds a run like the
CIFAR-10 configuration (ResNet-18, CIFAR stem, width 64, 32 px, projector
4096 → 256) with random weights: latency does not depend on the weights.

    python benchmarks/speed/bench_export_latency.py                 # ResNet-18 at 32 px
    python benchmarks/speed/bench_export_latency.py --run runs/cifar --batches 1 64 --rounds 30
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import onnxruntime  # noqa: E402
import tensorflow as tf  # noqa: E402

from byol_keras.config import from_dict, save_config  # noqa: E402
from byol_keras.export import export_run  # noqa: E402
from byol_keras.methods.byol import BYOL  # noqa: E402
from byol_keras.nn.backbones import build_backbone  # noqa: E402
from byol_keras.runs import RunDirectory  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for harness.py
from harness import Record, add_record_option  # noqa: E402


def make_run(root: Path, backbone: str, image_size: int, width: int) -> RunDirectory:
    """A finished run directory with randomly initialised weights."""
    config = from_dict(
        {
            "data": {"source": "digits", "image_size": image_size},
            "model": {"backbone": backbone, "width": width},
        }
    )
    run = RunDirectory(root).create()
    save_config(config, run.config_path)
    model = BYOL(
        build_backbone(backbone, image_size, width=width),
        projection_dim=config.model.projection_dim,
        projector_hidden_dim=config.model.projector_hidden_dim,
        predictor_hidden_dim=config.model.predictor_hidden_dim,
        total_steps=1,
    )
    model.save(run.model_path)
    model.online_backbone.save(run.backbone_path)
    run.finish({"epochs": 0})
    return run


def time_call(function) -> float:
    started = time.perf_counter()
    function()
    return (time.perf_counter() - started) * 1000.0


def measure(signature, session, images: np.ndarray, rounds: int, warmup: int) -> dict:
    tensor = tf.constant(images)

    def tf_call():
        signature(images=tensor)["embeddings"].numpy()

    def ort_call():
        session.run(None, {"images": images})

    for _ in range(warmup):
        tf_call()
        ort_call()
    times = {"saved_model": [], "onnxruntime": []}
    for _ in range(rounds):
        times["saved_model"].append(time_call(tf_call))
        times["onnxruntime"].append(time_call(ort_call))
    result = {}
    for name, values in times.items():
        median = statistics.median(values)
        result[name] = {
            "median_ms": median,
            "p90_ms": float(np.percentile(values, 90)),
            "images_per_second": len(images) / median * 1000.0,
        }
    result["tf_over_ort"] = result["saved_model"]["median_ms"] / result["onnxruntime"]["median_ms"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="finished run directory (default: a random ResNet-18 run)")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--input-size", type=int, help="size of the images sent (default: train)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    add_record_option(parser)
    args = parser.parse_args()
    run_record = Record("bench_export_latency", args.record)

    with tempfile.TemporaryDirectory() as scratch:
        if args.run:
            run = RunDirectory(args.run)
        else:
            keras.utils.set_random_seed(0)
            run = make_run(Path(scratch) / "run", args.backbone, args.image_size, args.width)
        manifest = export_run(run.root, output=Path(scratch) / "export")
        output = Path(manifest["output"])
        signature = tf.saved_model.load(manifest["version_dir"]).signatures["serving_default"]
        session = onnxruntime.InferenceSession(
            str(output / manifest["artifacts"]["onnx"]["path"]),
            providers=["CPUExecutionProvider"],
        )
        size = args.input_size or manifest["image_size"]
        rng = np.random.default_rng(0)
        results = {}
        for batch in args.batches:
            images = rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
            results[batch] = measure(signature, session, images, args.rounds, args.warmup)

    print(f"run: {run.root}  image size {manifest['image_size']}, inputs {size}x{size} uint8")
    print(
        f"tensorflow {tf.__version__}, onnxruntime {onnxruntime.__version__}, "
        f"{os.cpu_count()} CPUs, {args.rounds} rounds after {args.warmup} warm-up"
    )
    print(
        "| batch | SavedModel median (p90) ms | ORT median (p90) ms | TF/ORT | images/s TF, ORT |"
    )
    print("|---|---|---|---|---|")
    for batch, result in results.items():
        tf_result, ort_result = result["saved_model"], result["onnxruntime"]
        print(
            f"| {batch} | {tf_result['median_ms']:.2f} ({tf_result['p90_ms']:.2f}) "
            f"| {ort_result['median_ms']:.2f} ({ort_result['p90_ms']:.2f}) "
            f"| {result['tf_over_ort']:.2f} "
            f"| {tf_result['images_per_second']:.0f}, {ort_result['images_per_second']:.0f} |"
        )
    print(json.dumps({str(k): v for k, v in results.items()}))
    run_record.write(latency_by_batch={str(k): v for k, v in results.items()})


if __name__ == "__main__":
    main()
