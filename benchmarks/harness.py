"""One JSON record per benchmark run: the command, the machine, its load, the date and the figures.

Every benchmark writes its figures through `record`, so that a figure in
RESULTS.md can be traced to the machine it came from (CPU model and the flags
that change the speed of TensorFlow's kernels, cores, memory), the load beside
it, the code (git commit) and the library versions. A record goes to the path
given with `--record`, by default `benchmarks/records/<name>-<UTC time>.json`;
commit the record next to the RESULTS.md entry that quotes it.

```python
parser = argparse.ArgumentParser()
add_record_option(parser)
args = parser.parse_args()
run = Record("bench_train", args.record)
...  # measure
run.write(fit_over_loop=1.019)
```

Shell scripts use the same record from the command line:

```bash
python benchmarks/harness.py speed_vs_lightly --figure round1.byol_keras_img_per_s=302.9
```
"""

import argparse
import contextlib
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

RECORDS = Path(__file__).resolve().parent / "records"
REPOSITORY = Path(__file__).resolve().parents[1]
# The instruction sets that change which kernels TensorFlow and onnxruntime run.
SPEED_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile")
LIBRARIES = (
    "byol-keras", "tensorflow", "keras", "keras-cv", "numpy", "onnxruntime", "tf2onnx",
    "scikit-learn",
)  # fmt: skip


def add_record_option(parser: argparse.ArgumentParser) -> None:
    """Adds `--record PATH`, where the run's JSON record goes (default: benchmarks/records/).

    ```python
    add_record_option(parser)
    ```
    """
    parser.add_argument(
        "--record",
        type=Path,
        help="where the JSON record goes (default: benchmarks/records/<name>-<UTC time>.json)",
    )


class Record:
    """The record of one benchmark run: notes the load when made, writes the figures when done.

    ```python
    run = Record("bench_pipeline", args.record)
    ...  # measure
    run.write(augmented_pairs_per_s=2_500.0)
    ```
    """

    def __init__(self, name: str, path: Path | str | None = None, command: str | None = None):
        self.name, self.path, self.command = name, path, command
        self.load_before = _load()
        self.started = time.perf_counter()

    def write(self, **figures: object) -> Path:
        """Writes the record with `figures`, the load before and now, and the seconds taken."""
        path = write_record(
            self.name,
            figures,
            self.path,
            command=self.command,
            load={"before": self.load_before, "after": _load()},
            seconds=round(time.perf_counter() - self.started, 3),
        )
        print(f"record written to {path}", file=sys.stderr)
        return path


def write_record(
    name: str,
    figures: dict,
    path: Path | str | None = None,
    *,
    command: str | None = None,
    load: dict | None = None,
    seconds: float | None = None,
) -> Path:
    """Writes the record of one run as JSON to `path` (or benchmarks/records/) and returns it.

    ```python
    write_record("speed_vs_lightly", {"round1": {"byol_keras_img_per_s": 302.9}})
    ```
    """
    now = datetime.datetime.now(datetime.UTC)
    path = Path(path) if path else RECORDS / f"{name}-{now:%Y%m%dT%H%M%SZ}.json"
    entry = {
        "name": name,
        "command": command or shlex.join([Path(sys.executable).name, *sys.argv]),
        "date_utc": now.isoformat(timespec="seconds"),
        "machine": machine(),
        "onednn": _onednn(),
        "load_average": load or {"now": _load()},
        "seconds": seconds,
        "git": _git(),
        "libraries": _libraries(),
        "figures": figures,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(entry, indent=2, default=str) + "\n")
    return path


def machine() -> dict:
    """The CPU model, its speed-relevant flags, cores, memory and platform of this machine.

    ```python
    machine()["cpu"]  # e.g. "Intel(R) Xeon(R) Processor"
    ```
    """
    cpuinfo = _read("/proc/cpuinfo")
    model = _field(cpuinfo, "model name") or platform.processor() or platform.machine()
    flags = set(_field(cpuinfo, "flags").split())
    return {
        "cpu": model,
        "flags": [flag for flag in SPEED_FLAGS if flag in flags],
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_gib": _memory_gib(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def _onednn() -> dict:
    """TF_ENABLE_ONEDNN_OPTS as set, and whether this process's TensorFlow runs oneDNN's kernels.

    The state is None when this process never imported TensorFlow (a driver whose legs run in
    child processes, which inherit the variable).
    """
    from byol_keras import onednn

    return {"variable": os.environ.get(onednn.ENV), "on": onednn.enabled()}


def _load() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _field(text: str, key: str) -> str:
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == key:
            return value.strip()
    return ""


def _memory_gib() -> float | None:
    kib = _field(_read("/proc/meminfo"), "MemTotal").split()
    return round(int(kib[0]) / 2**20, 1) if kib else None


def _git() -> dict:
    def git(*arguments: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(REPOSITORY), *arguments], capture_output=True, text=True
            )
        except OSError:
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    status = git("status", "--porcelain", "--untracked-files=no")
    return {
        "commit": git("rev-parse", "HEAD"),
        "dirty": bool(status) if status is not None else None,
    }


def _libraries() -> dict:
    versions = {}
    for name in LIBRARIES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


def _figure(text: str) -> tuple[str, object]:
    key, separator, value = text.partition("=")
    if not separator or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    with contextlib.suppress(ValueError):
        return key, float(value)
    return key, value


def main(argv: list[str] | None = None) -> int:
    """Writes a record from the command line, for the shell benchmarks."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="the benchmark's name, e.g. speed_vs_lightly")
    parser.add_argument(
        "--figure", type=_figure, action="append", default=[], metavar="KEY=VALUE",
        help="one figure; numbers are stored as numbers",
    )  # fmt: skip
    parser.add_argument("--command", help="the benchmark's own command line")
    add_record_option(parser)
    args = parser.parse_args(argv)
    print(write_record(args.name, dict(args.figure), args.record, command=args.command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
