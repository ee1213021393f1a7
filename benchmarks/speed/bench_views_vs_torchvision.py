"""View pairs per second: byol-keras's `pair_dataset` against a torchvision DataLoader, same files.

Both sides make BYOL's two views (the `byol` preset's numbers, `view_params`) of
the same JPEG files at `--size` px, in batches of `--batch-size`: ours with
`load_source("folder:...")` and `pair_dataset` in tf.data, in this process; the
peer with `torchvision_views.py` (PIL decoding, torchvision transforms or
lightly's `BYOLTransform`, a `DataLoader` with `--workers` processes), run by the
lightly environment's Python (`../shared/bench/lightly_env.sh`). The sides
alternate, `--rounds` times per data set, each timing `--steps` batches after
`--warmup`; every round builds its pipeline afresh. Besides pairs per second,
each side reports the CPU milliseconds it spent per pair (this process; the
peer's main process and workers), which a busy shared machine disturbs less.

Data sets (`--data`): `camvid`, the 468 CamVid train+val frames (480x360 JPEG),
and `bccd`, the 364 BCCD blood-smear photos (640x480 JPEG), unpacked from
`../shared/data` (`SHARED_DIR` elsewhere) into `--work` if not there yet.

```bash
python benchmarks/speed/bench_views_vs_torchvision.py --rounds 3 --data camvid bccd
```
"""

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

HERE = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("SHARED_DIR", HERE.parents[2] / "shared"))
DATA = {  # name: (archive in SHARED/data, folders of JPEG files inside it)
    "camvid": ("camvid-jpeg.tar.gz", ("camvid/train/images", "camvid/val/images")),
    "bccd": ("bccd-voc.tar.gz", ("bccd/JPEGImages",)),
}


def stop(message: str) -> None:
    print(f"{Path(sys.argv[0]).name}: {message}", file=sys.stderr)
    raise SystemExit(2)


def jpeg_folder(name: str, work: Path) -> Path:
    """A flat folder of the data set's JPEG files (hard links into the unpacked archive)."""
    archive, folders = DATA[name]
    flat = work / f"{name}-frames"
    if flat.is_dir() and any(flat.iterdir()):
        return flat
    if not (SHARED / "data" / archive).is_file():
        stop(f"needs {SHARED / 'data' / archive} (../shared/data); not found")
    unpacked = work / "unpacked"
    unpacked.mkdir(parents=True, exist_ok=True)
    with tarfile.open(SHARED / "data" / archive) as tar:
        tar.extractall(unpacked, filter="data")
    flat.mkdir(parents=True, exist_ok=True)
    for folder in folders:
        for path in sorted((unpacked / folder).glob("*.jpg")):
            os.link(path, flat / f"{Path(folder).parent.name}-{path.name}")
    return flat


def peer_python(given: str | None) -> str:
    """The lightly environment's Python: `--peer-python`, `$PEER_PY`, or made by lightly_env.sh."""
    if given or os.environ.get("PEER_PY"):
        return given or os.environ["PEER_PY"]
    script = SHARED / "bench" / "lightly_env.sh"
    if not script.is_file():
        stop(f"needs {script} (the peer environment, ../shared/bench); not found")
    done = subprocess.run(
        ["bash", "-c", f'source "{script}" >/dev/null && printf %s "$PEER_PY"'],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0 or not done.stdout:
        stop(f"{script} made no $PEER_PY: {done.stderr.strip()[-200:]}")
    return done.stdout


def ours(folder: Path, args, seed: int) -> dict:
    """`pair_dataset`'s pairs per second and CPU ms per pair over `folder`, after a warm-up."""
    from byol_keras.augment import make_augmenter, pair_dataset
    from byol_keras.data import load_source

    source = load_source(f"folder:{folder}", image_size=args.size)
    if source.image_size is not None:
        stop(f"{folder}: expected images of their own sizes")
    augmenter = make_augmenter(args.preset, image_size=args.size, seed=seed)
    iterator = iter(pair_dataset(source, augmenter, args.batch_size, seed=seed))
    for _ in range(args.warmup):
        next(iterator)
    cpu, start = time.process_time(), time.perf_counter()
    for _ in range(args.steps):
        view1, view2 = next(iterator)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    assert view1.shape == view2.shape == (args.batch_size, args.size, args.size, 3)
    del iterator  # stops its prefetching before the peer's turn
    pairs = args.steps * args.batch_size
    return {"pairs_per_s": pairs / seconds, "cpu_ms_per_pair": 1000 * cpu / pairs}


def peer(python: str, folder: Path, transforms: str, args, seed: int) -> dict:
    """The torchvision side's figures, from `torchvision_views.py` run by the peer's Python."""
    from byol_keras.augment.views import view_params

    listing = folder.parent / f"{folder.name}.txt"
    listing.write_text("".join(f"{path}\n" for path in sorted(folder.glob("*.jpg"))))
    views = json.dumps([dataclasses.asdict(view) for view in view_params(args.preset)])
    command = [
        python, str(HERE / "torchvision_views.py"), "--files", str(listing), "--views", views,
        "--size", str(args.size), "--batch-size", str(args.batch_size),
        "--workers", str(args.workers), "--steps", str(args.steps),
        "--warmup", str(args.warmup), "--transforms", transforms, "--seed", str(seed),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        stop(f"torchvision_views.py failed: {done.stderr.strip().splitlines()[-1:]}")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    return {key: figures[key] for key in ("pairs_per_s", "cpu_ms_per_pair")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", choices=sorted(DATA), default=["camvid", "bccd"])
    parser.add_argument(
        "--peers", nargs="+", choices=("torchvision", "lightly"),
        default=["torchvision", "lightly"],
        help="torchvision transforms written out, and/or lightly's BYOLTransform",
    )  # fmt: skip
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30, help="timed batches per round")
    parser.add_argument("--warmup", type=int, default=8)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2, help="the DataLoader's")
    parser.add_argument("--preset", default="byol")
    parser.add_argument("--work", type=Path, default=Path("/tmp/byol-viewspeed"))
    parser.add_argument("--peer-python", help="default: $PEER_PY, else lightly_env.sh makes it")
    sys.path.insert(0, str(HERE.parent))  # benchmarks/, for harness.py
    from harness import Record, add_record_option

    add_record_option(parser)
    args = parser.parse_args()
    python = peer_python(args.peer_python)
    folders = {name: jpeg_folder(name, args.work) for name in args.data}
    run = Record("bench_views_vs_torchvision", args.record)
    print(f"{os.cpu_count()} CPUs, load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")

    sides = ["byol_keras", *args.peers]
    figures: dict = {}
    for name, folder in folders.items():
        rounds = []
        for index in range(args.rounds):
            # Alternate which side goes first, so that a drift in the load favours neither.
            order = sides if index % 2 == 0 else sides[::-1]
            result = {}
            for side in order:
                if side == "byol_keras":
                    result[side] = ours(folder, args, seed=index)
                else:
                    result[side] = peer(python, folder, side, args, seed=index)
            result["load_1min"] = round(os.getloadavg()[0], 2)
            rounds.append(result)
            print(
                f"{name} round {index + 1}: "
                + ", ".join(
                    f"{side} {result[side]['pairs_per_s']:.1f} pairs/s "
                    f"({result[side]['cpu_ms_per_pair']:.2f} CPU ms/pair)"
                    for side in sides
                )
                + f", load {result['load_1min']}",
                flush=True,
            )
        summary = {
            side: {
                key: statistics.median(r[side][key] for r in rounds)
                for key in ("pairs_per_s", "cpu_ms_per_pair")
            }
            for side in sides
        }
        for peer_side in args.peers:
            summary[f"byol_keras_over_{peer_side}"] = {
                "pairs_per_s": summary["byol_keras"]["pairs_per_s"]
                / summary[peer_side]["pairs_per_s"],
                "cpu_per_pair": summary[peer_side]["cpu_ms_per_pair"]
                / summary["byol_keras"]["cpu_ms_per_pair"],
            }
            print(
                f"{name} medians: byol_keras {summary['byol_keras']['pairs_per_s']:.1f}, "
                f"{peer_side} {summary[peer_side]['pairs_per_s']:.1f} pairs/s; ratio "
                f"{summary[f'byol_keras_over_{peer_side}']['pairs_per_s']:.2f} "
                f"(CPU per pair {summary[f'byol_keras_over_{peer_side}']['cpu_per_pair']:.2f})"
            )
        figures[name] = {"files": len(list(folder.glob("*.jpg"))), "rounds": rounds, **summary}
    settings = {k: v for k, v in vars(args).items() if k not in ("record", "peer_python")}
    run.write(settings=settings, **figures)


if __name__ == "__main__":
    main()
