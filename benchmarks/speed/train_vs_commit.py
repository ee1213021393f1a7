"""`byol-keras train` images per second at the working tree against older commits, alternating.

Each round trains `--steps` steps with each tree's own copy of `--config` (so
a recipe that changed with the code is compared as it was), in a fresh
process, rotating which tree goes first, and reads `images_per_second`
from the run's `summary.json` (the first, tracing step left out). Each older
commit is checked out into a temporary git worktree and imported through
`PYTHONPATH`, so all trees run in the same environment. It prints each round,
the medians and the median of the round ratios (the working tree over each
commit, and each commit over the one before it: list them oldest first), and
writes a harness record.

```bash
python benchmarks/speed/train_vs_commit.py 50146aa 5bff957 --config configs/cifar10_cpu.yaml \
    --set data.source=folder:/tmp/cifar10 --set data.val_source=folder:/tmp/cifar10
```
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
from harness import Record, add_record_option  # noqa: E402


def train_rate(tree: Path, args: argparse.Namespace, output: Path) -> float:
    """Images per second of one short `train` run of `tree`'s code and config."""
    overrides = [
        f"train.steps_per_epoch={args.steps}",
        "train.epochs=1",
        "eval.knn_every_epochs=0",
        *args.set,
    ]
    command = [sys.executable, "-m", "byol_keras", "train", "--config", str(tree / args.config)]
    command += ["--output", str(output)] + [x for key in overrides for x in ("--set", key)]
    environment = {**os.environ, "PYTHONPATH": str(tree), "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(command, cwd=tree, env=environment, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"train_vs_commit: {tree} failed:\n{done.stderr[-2000:]}")
    return json.loads((output / "summary.json").read_text())["images_per_second"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("commits", nargs="+", help="older commits (git revisions), oldest first")
    parser.add_argument("--config", required=True, help="a config path inside every tree")
    parser.add_argument("--steps", type=int, default=150, help="training steps a leg")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    add_record_option(parser)
    args = parser.parse_args()
    for commit in args.commits:
        known = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--verify", "-q",
                                f"{commit}^{{commit}}"], capture_output=True)  # fmt: skip
        if known.returncode != 0:
            parser.exit(2, f"train_vs_commit: {commit!r} is not a commit of {ROOT}\n")
    run_record = Record("train_vs_commit", args.record)
    with tempfile.TemporaryDirectory() as scratch:
        trees = {"now": ROOT}
        for commit in args.commits:
            trees[commit] = Path(scratch) / f"tree-{len(trees)}"
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q",
                 str(trees[commit]), commit], check=True,
            )  # fmt: skip
        try:
            rates = {name: [] for name in trees}
            for round_index in range(args.rounds):
                names = list(trees)[round_index % len(trees) :]
                names += list(trees)[: round_index % len(trees)]
                for name in names:
                    output = Path(scratch) / f"run-{round_index}-{len(rates[name])}-{name}"
                    rates[name].append(train_rate(trees[name], args, output))
                print(f"round {round_index + 1}: "
                      + ", ".join(f"{name} {rates[name][-1]:.1f}" for name in trees)
                      + " img/s", flush=True)  # fmt: skip
        finally:
            for tree in trees.values():
                if tree != ROOT:
                    subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                                    str(tree)], check=False)  # fmt: skip
    pairs = [("now", commit) for commit in args.commits]
    pairs += [(args.commits[i + 1], args.commits[i]) for i in range(len(args.commits) - 1)]
    ratios = {
        f"{a}/{b}": statistics.median(x / y for x, y in zip(rates[a], rates[b], strict=True))
        for a, b in pairs
    }
    medians = {name: statistics.median(values) for name, values in rates.items()}
    print("median img/s: " + ", ".join(f"{k} {v:.1f}" for k, v in medians.items()))
    print("median of round ratios: " + ", ".join(f"{k} {v:.3f}" for k, v in ratios.items()))
    run_record.write(
        settings={k: v for k, v in vars(args).items() if k != "record"},
        img_per_s=rates,
        median_img_per_s=medians,
        ratios=ratios,
    )


if __name__ == "__main__":
    main()
