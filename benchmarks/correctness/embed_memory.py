"""Peak memory of `byol-keras embed` on a folder and on the same folder repeated k times.

Each size is a folder of symbolic links to the given images (the k-times
folder links every file k times), embedded by `byol-keras embed` in a fresh
process; its peak resident memory is read from `getrusage(RUSAGE_CHILDREN)` in
a one-shot parent, so the sizes do not share a maximum. Flat memory means the
peak barely moves while rows (and the output file) grow k-fold; the output's
rows and the seconds taken are printed alongside.

```
python benchmarks/correctness/embed_memory.py --run runs/cifar10 \
    --folder /tmp/cifar10-jpeg/test --factors 1 2 4
```
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for harness.py
from harness import Record, add_record_option  # noqa: E402

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")

# Runs one command and prints the peak RSS of its process tree (KiB on Linux).
_MEASURE = """
import resource, subprocess, sys
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def linked_copy(folder: Path, target: Path, factor: int) -> int:
    """`target` mirrors `folder`'s class folders, each file linked `factor` times; returns files."""
    count = 0
    for root, _, names in os.walk(folder):
        relative = Path(root).relative_to(folder)
        for name in sorted(names):
            if not name.lower().endswith(IMAGE_EXTENSIONS):
                continue
            (target / relative).mkdir(parents=True, exist_ok=True)
            for copy in range(factor):
                (target / relative / f"{copy}_{name}").symlink_to(Path(root, name).resolve())
                count += 1
    return count


def measure(run: str, folder: Path, output: Path, batch_size: int) -> dict:
    command = [sys.executable, "-m", "byol_keras", "embed", "--run", run,
               "--data", f"folder:{folder}", "--output", str(output),
               "--batch-size", str(batch_size)]  # fmt: skip
    started = time.perf_counter()
    peak = subprocess.run(
        [sys.executable, "-c", _MEASURE, *command], check=True, capture_output=True, text=True
    ).stdout.split()[-1]
    import numpy as np

    rows, dim = np.load(output, mmap_mode="r").shape
    return {
        "rows": rows,
        "dim": dim,
        "peak_rss_mib": int(peak) / 1024,
        "output_mib": output.stat().st_size / 2**20,
        "seconds": time.perf_counter() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="finished run directory")
    parser.add_argument("--folder", required=True, help="image folder (class sub-folders)")
    parser.add_argument("--factors", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch-size", type=int, default=256)
    add_record_option(parser)
    args = parser.parse_args()
    run_record = Record("embed_memory", args.record)
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        for factor in args.factors:
            folder = Path(scratch, f"x{factor}")
            files = linked_copy(Path(args.folder), folder, factor)
            result = {"factor": factor, "files": files}
            result.update(
                measure(args.run, folder, Path(scratch, f"x{factor}.npy"), args.batch_size)
            )
            print(json.dumps(result), flush=True)
            results.append(result)
            for leftover in Path(scratch).glob(f"x{factor}.*"):
                leftover.unlink()
    base = results[0]
    for result in results[1:]:
        growth = result["peak_rss_mib"] - base["peak_rss_mib"]
        print(
            f"x{result['factor']}: {result['rows']} rows vs {base['rows']}: peak RSS "
            f"{result['peak_rss_mib']:.0f} MiB vs {base['peak_rss_mib']:.0f} MiB "
            f"({growth:+.0f} MiB; the rows' embeddings alone are "
            f"{(result['rows'] - base['rows']) * result['dim'] * 4 / 2**20:.0f} MiB more)"
        )
    run_record.write(sizes=results)


if __name__ == "__main__":
    main()
