"""What the kNN monitor costs: the same training run with and without it, interleaved.

Each repeat trains twice through `byol-keras train` in a fresh process, with
`eval.knn_every_epochs=0` and with the value under test, and reads the
training throughput (images per second from the second step to the end of
training, so the monitor's epoch-end work is inside the timed span) from the
run's summary.json. The slowdown is 1 − with/without, per repeat and overall
(median of the per-repeat ratios); a shared CPU makes single runs noisy, so
the runs alternate. The monitor's own time spent measuring is printed by the
run as a log line ("kNN monitor: ... s in all"), which the benchmark shows.

```
python benchmarks/speed/bench_knn_monitor.py --config configs/mnist.yaml \
    --set data.source=npz:../shared/data/mnist.npz --set train.epochs=2 --repeats 2
```
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for harness.py
from harness import Record, add_record_option  # noqa: E402


def train_once(config: str, overrides: list[str], every: int, output: Path) -> dict:
    command = [sys.executable, "-m", "byol_keras", "train", "--config", config,
               "--output", str(output)]  # fmt: skip
    for override in [*overrides, f"eval.knn_every_epochs={every}", "train.verbose=0"]:
        command += ["--set", override]
    started = time.perf_counter()
    process = subprocess.run(
        command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    summary = json.loads((output / "summary.json").read_text())
    summary["process_seconds"] = time.perf_counter() - started
    summary["monitor_line"] = next(
        (line for line in process.stderr.splitlines() if "kNN monitor:" in line), ""
    )
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--every", type=int, default=1, help="knn_every_epochs under test")
    parser.add_argument("--repeats", type=int, default=2)
    add_record_option(parser)
    args = parser.parse_args()
    run_record = Record("bench_knn_monitor", args.record)

    ratios, repeats = [], []
    with tempfile.TemporaryDirectory() as scratch:
        for repeat in range(args.repeats):
            # Alternate the order so that a load change on the machine hits both arms.
            arms = (0, args.every) if repeat % 2 == 0 else (args.every, 0)
            result = {}
            for every in arms:
                output = Path(scratch) / f"r{repeat}-every{every}"
                result[every] = train_once(args.config, args.overrides, every, output)
            without, with_monitor = result[0], result[args.every]
            ratio = with_monitor["images_per_second"] / without["images_per_second"]
            ratios.append(ratio)
            repeats.append(
                {
                    "without_img_per_s": without["images_per_second"],
                    "with_img_per_s": with_monitor["images_per_second"],
                    "monitor_line": with_monitor["monitor_line"].strip(),
                }
            )
            print(
                f"repeat {repeat + 1}: without monitor {without['images_per_second']:.1f} img/s "
                f"({without['process_seconds']:.0f} s in all), with monitor every {args.every} "
                f"epoch(s) {with_monitor['images_per_second']:.1f} img/s "
                f"({with_monitor['process_seconds']:.0f} s in all, final knn_top1 "
                f"{with_monitor.get('final_knn_top1')}); slowdown {1 - ratio:.1%}\n"
                f"  {with_monitor['monitor_line'].strip()}",
                flush=True,
            )
    print(f"median slowdown over {len(ratios)} repeats: {1 - statistics.median(ratios):.1%}")
    run_record.write(repeats=repeats, median_slowdown=1 - statistics.median(ratios))


if __name__ == "__main__":
    main()
