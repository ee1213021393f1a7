"""What makes BYOL work: a grid of short pretrainings, each followed by a kNN evaluation.

Three sections, every cell trained by `byol-keras train` and evaluated by
`byol-keras evaluate --protocol knn`, each in its own process:

- `ablations`: full BYOL, no predictor, τ = 0, 0.99 and 1 constant, SimSiam,
  SimCLR, and the random-init baseline (`evaluate --baseline random` on the
  full-BYOL run); full BYOL again with each `--noise-seeds` seed, to show noise.
- `batch`: BYOL and SimCLR at each `--batch-sizes`, for the same epochs (with
  `--steps-per-epoch`, the cap is scaled so that every batch size sees the same
  images); each method's drop from its best batch size. The learning rate
  follows the config's `optimizer.lr_scaling` (`none` in cifar10_cpu.yaml:
  the same rate at every batch size).
- `augment`: BYOL and SimCLR with the full recipe, without colour (no jitter,
  no grayscale), and with crop + flip only (also no blur, no solarisation);
  each method's drop from its best.

Cells that resolve to the same config (full BYOL at the recipe's batch is in all
three sections) run once. Each cell lives in `OUTPUT/cells/<hash of its config>/`
and is done when its `result.json` exists: rerunning the command skips finished
cells, and resumes a cell whose training was killed from its last checkpoint.
A cell whose training fails (e.g. diverges) is recorded as failed; delete its
`result.json` to try it again. The tables go to `OUTPUT/study.md` and
`OUTPUT/study.json`, the figure to `OUTPUT/study.png`.

```
python benchmarks/quality/study.py --config configs/cifar10_cpu.yaml --data /tmp/cifar10 \
    --output runs/study --seeds 0 --noise-seeds 1
```

The tables cover the sections of the last invocation: run sections separately
(`--only ablations`, then `--only batch augment`) into one `--output`, then the
whole command once more, which trains nothing and writes all three tables.
"""

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from byol_keras.cli import add_overrides
from byol_keras.config import load_config
from byol_keras.errors import UsageError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for harness.py
from harness import Record, add_record_option  # noqa: E402

SECTIONS = ("ablations", "batch", "augment")
METHODS = {"BYOL": (), "SimCLR": ("model.method=simclr",)}
NO_COLOUR = ("augment.jitter_prob=0", "augment.grayscale_prob=0")
CROP_FLIP = (*NO_COLOUR, "augment.blur_prob=[0,0]", "augment.solarize_prob=[0,0]")
ABLATIONS = {
    "full BYOL": (),
    "no predictor": ("model.predictor=false",),
    "τ = 0 constant": ("model.tau_schedule=constant", "model.tau_base=0.0"),
    "τ = 0.99 constant": ("model.tau_schedule=constant", "model.tau_base=0.99"),
    "τ = 1 constant": ("model.tau_schedule=constant", "model.tau_base=1.0"),
    "SimSiam": ("model.method=simsiam",),
    "SimCLR": ("model.method=simclr",),
}
RANDOM_INIT = "random init"
AUGMENTATIONS = {"full": (), "no colour": NO_COLOUR, "crop + flip": CROP_FLIP}
# Keys that change how a run is watched, not what it learns: left out of a cell's identity.
UNWATCHED = ("train.verbose", "train.checkpoint_every_steps", "train.keep_checkpoints")


@dataclass(frozen=True)
class Cell:
    """One row of a table: a training (or the random-init baseline of one) and its settings."""

    section: str
    name: str
    method: str
    overrides: tuple[str, ...]
    seed: int
    random_init: bool = False


def grid(args: argparse.Namespace, recipe_batch: int) -> list[Cell]:
    """The cells of the sections asked for, in table order."""
    cells = []
    if "ablations" in args.only:
        for seed in args.seeds:
            cells += [Cell("ablations", name, name, o, seed) for name, o in ABLATIONS.items()]
            cells.append(Cell("ablations", RANDOM_INIT, RANDOM_INIT, (), seed, random_init=True))
        cells += [Cell("ablations", "full BYOL", "full BYOL", (), s) for s in args.noise_seeds]
    for seed in args.seeds:
        for method, method_keys in METHODS.items():
            if "batch" in args.only:
                for batch in args.batch_sizes:
                    keys = (*method_keys, f"train.batch_size={batch}")
                    if args.steps_per_epoch:  # the same images per epoch at every batch size
                        steps = max(1, args.steps_per_epoch * recipe_batch // batch)
                        keys += (f"train.steps_per_epoch={steps}",)
                    cells.append(Cell("batch", f"batch {batch}", method, keys, seed))
            if "augment" in args.only:
                for name, keys in AUGMENTATIONS.items():
                    cells.append(Cell("augment", name, method, (*method_keys, *keys), seed))
    if args.cells:
        cells = [cell for cell in cells if cell.name in args.cells]
    return cells


def base_overrides(args: argparse.Namespace) -> list[str]:
    """What every cell shares: the data, the budget, no kNN monitor, then the user's --set."""
    keys = ["eval.knn_every_epochs=0", "eval.final_linear_probe=false", "train.verbose=2"]
    if args.data:
        keys += [f"data.source=folder:{args.data}", f"data.val_source=folder:{args.data}"]
    if args.epochs:
        keys.append(f"train.epochs={args.epochs}")
    if args.steps_per_epoch:
        keys.append(f"train.steps_per_epoch={args.steps_per_epoch}")
    return keys + args.overrides


def cell_overrides(args: argparse.Namespace, cell: Cell) -> list[str]:
    return [*base_overrides(args), *cell.overrides, f"train.seed={cell.seed}"]


def cell_key(args: argparse.Namespace, cell: Cell) -> str:
    """A hash of the cell's resolved training config: equal configs are one cell."""
    resolved = load_config(args.config, cell_overrides(args, cell)).to_dict()
    resolved.pop("eval")
    for key in UNWATCHED:
        section, name = key.split(".")
        resolved[section].pop(name)
    text = json.dumps(resolved, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def run_cell(args: argparse.Namespace, cell: Cell, key: str) -> dict:
    """Trains (or resumes) the cell's run and evaluates it; returns and writes its result."""
    directory = args.output / "cells" / key
    run = directory / "run"
    directory.mkdir(parents=True, exist_ok=True)
    result_path = directory / ("random.json" if cell.random_init else "result.json")
    started = time.perf_counter()
    error = None
    if not (run / "summary.json").is_file():
        command = ["train", "--config", str(args.config), "--output", str(run)]
        for override in cell_overrides(args, cell):
            command += ["--set", override]
        error = _byol_keras(command, directory / "train.log")
    if error is None:
        evaluate = ["evaluate", "--run", str(run), "--protocol", "knn"]
        evaluate += ["--baseline", "random"] if cell.random_init else []
        if args.knn_max_train:
            evaluate += ["--set", f"eval.max_train={args.knn_max_train}"]
        log_name = "evaluate-random.log" if cell.random_init else "evaluate.log"
        error = _byol_keras(evaluate, directory / log_name)
    result = {**asdict(cell), "key": key, "error": error, "seconds": None}
    if error is None:
        result.update(_read_run(run, cell.random_init))
    result["seconds"] = time.perf_counter() - started
    temporary = result_path.with_suffix(".tmp")
    temporary.write_text(json.dumps(result, indent=2))
    os.replace(temporary, result_path)  # a killed study never leaves half a result
    return result


def _byol_keras(arguments: list[str], log_path: Path) -> str | None:
    """Runs `byol-keras ARGUMENTS` with its output in `log_path`; the error line, or None."""
    with log_path.open("a") as log:
        process = subprocess.run(
            [sys.executable, "-m", "byol_keras", *arguments], stdout=log, stderr=subprocess.STDOUT
        )
    if process.returncode in (130, 143) or process.returncode < 0:
        # Interrupted (Ctrl-C, SIGTERM, a kill): stop the study, record nothing.
        raise SystemExit(f"study: interrupted during `byol-keras {arguments[0]}`; rerun to resume")
    if process.returncode == 0:
        return None
    lines = log_path.read_text(errors="replace").strip().splitlines()
    return (lines or [f"exit code {process.returncode}"])[-1][:300]


def _read_run(run: Path, random_init: bool) -> dict:
    evaluation = json.loads(
        (run / "eval" / ("knn-random.json" if random_init else "knn.json")).read_text()
    )
    summary = json.loads((run / "summary.json").read_text())
    trained = {
        "collapse": summary.get("final_collapse"),
        "final_loss": summary.get("final_loss"),
        "steps": summary.get("steps"),
        "train_seconds": summary.get("wall_time_seconds"),
        "images_per_second": summary.get("images_per_second"),
    }
    return {
        "knn_top1": evaluation["top1"],
        "knn_top5": evaluation.get("top5"),
        "knn_n_train": evaluation["n_train"],
        "eval_seconds": evaluation["wall_time_seconds"],
        **({} if random_init else trained),
    }


def rows(section: str, results: list[dict]) -> list[dict]:
    """One row per (name, method) of `section`: kNN and collapse over its seeds, drop from best."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for result in results:
        if result["section"] == section:
            groups.setdefault((result["name"], result["method"]), []).append(result)
    table = []
    for (name, method), group in groups.items():
        done = [r for r in group if r.get("knn_top1") is not None]
        knn = [100 * r["knn_top1"] for r in done]
        collapse = [r["collapse"] for r in done if r.get("collapse") is not None]
        table.append(
            {
                "name": name,
                "method": method,
                "seeds": [r["seed"] for r in done],
                "knn_top1": statistics.mean(knn) if knn else None,
                "knn_per_seed": knn,
                "collapse": statistics.mean(collapse) if collapse else None,
                "errors": [r["error"] for r in group if r.get("error")],
            }
        )
    for method in {row["method"] for row in table}:
        measured = [r["knn_top1"] for r in table if r["method"] == method and r["knn_top1"]]
        for row in table:
            if row["method"] == method and row["knn_top1"] is not None:
                row["drop"] = max(measured) - row["knn_top1"]
    return table


def markdown(args: argparse.Namespace, tables: dict, command: str) -> str:
    config = load_config(args.config, base_overrides(args))
    lines = [
        "# What makes BYOL work: the study",
        "",
        f"Command: `{command}`",
        "",
        f"Recipe: `{args.config}` with {' '.join(f'`{o}`' for o in base_overrides(args))}: "
        f"{config.train.epochs} epoch(s) of batch {config.train.batch_size}"
        + (
            f", at most {config.train.steps_per_epoch} steps an epoch"
            if args.steps_per_epoch
            else ""
        )
        + f", {config.optimizer.name} at base lr {config.optimizer.base_lr:g} "
        + f"(lr_scaling {config.optimizer.lr_scaling})"
        + f"; seeds {', '.join(map(str, args.seeds))}"
        + (
            f" (full BYOL also seeds {', '.join(map(str, args.noise_seeds))})"
            if args.noise_seeds
            else ""
        )
        + f". kNN: k={config.eval.knn_k}, temperature {config.eval.knn_temperature}, "
        + (f"a {args.knn_max_train}-image bank" if args.knn_max_train else "the whole train split")
        + f", on `{config.data.val_source}` split `{config.data.val_split}`.",
        "",
    ]
    if "ablations" in tables:
        lines += [
            "## Ablations",
            "",
            "| cell | kNN top-1 (%) | per seed | collapse indicator |",
            "|---|---|---|---|",
        ]
        for row in tables["ablations"]:
            measured = f"{_number(row['knn_top1'])} | {_seeds(row)}"
            lines.append(f"| {row['name']} | {measured} | {_number(row['collapse'], 3)} |")
        full = next((r for r in tables["ablations"] if r["name"] == "full BYOL"), None)
        if full and len(full["knn_per_seed"]) > 1:
            spread = max(full["knn_per_seed"]) - min(full["knn_per_seed"])
            lines += [
                "",
                f"Noise: full BYOL over {len(full['seeds'])} seeds spans {spread:.2f} points.",
            ]
        lines.append("")
    for section, title, label in (
        ("batch", "Batch size", "batch"),
        ("augment", "Augmentations", "augmentation"),
    ):
        if section not in tables:
            continue
        methods = sorted({r["method"] for r in tables[section]}, key=list(METHODS).index)
        header = " | ".join(f"{m} kNN (%) | {m} drop" for m in methods)
        lines += [
            f"## {title}",
            "",
            f"| {label} | {header} |",
            "|---" * (1 + 2 * len(methods)) + "|",
        ]
        for name in dict.fromkeys(r["name"] for r in tables[section]):
            cells = []
            for method in methods:
                row = next(
                    (r for r in tables[section] if r["name"] == name and r["method"] == method), {}
                )
                cells += [_number(row.get("knn_top1")), _number(row.get("drop"))]
            lines.append(f"| {name} | {' | '.join(cells)} |")
        lines.append("")
    failed = [e for table in tables.values() for r in table for e in r["errors"]]
    if failed:
        lines += ["## Failed cells", "", *[f"- {error}" for error in failed], ""]
    return "\n".join(lines)


def _number(value, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _seeds(row: dict) -> str:
    return ", ".join(
        f"{k:.2f} (seed {s})" for k, s in zip(row["knn_per_seed"], row["seeds"], strict=True)
    )


def figure(tables: dict, path: Path) -> None:
    """One panel per section: kNN top-1 of each cell, collapse noted on the ablations."""
    from matplotlib.figure import Figure

    panels = [s for s in SECTIONS if s in tables]
    fig = Figure(figsize=(6 * len(panels), 4.5), layout="constrained")
    for axis, section in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels, strict=True):
        table = [r for r in tables[section] if r["knn_top1"] is not None]
        if section == "ablations":
            bars = axis.bar(range(len(table)), [r["knn_top1"] for r in table], color="tab:blue")
            for bar, row in zip(bars, table, strict=True):
                if row["collapse"] is not None:
                    axis.annotate(
                        f"c={row['collapse']:.2f}",
                        (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center",
                        va="bottom",
                        fontsize=8,
                    )
            axis.set_xticks(range(len(table)), [r["name"] for r in table], rotation=30, ha="right")
            axis.set_title("Ablations (c: collapse indicator)")
        else:
            names = list(dict.fromkeys(r["name"] for r in table))
            for method in METHODS:
                points = [
                    (names.index(r["name"]), r["knn_top1"]) for r in table if r["method"] == method
                ]
                if points:
                    axis.plot(*zip(*points, strict=True), marker="o", label=method)
            axis.set_xticks(range(len(names)), names)
            axis.legend()
            axis.set_title("Batch size" if section == "batch" else "Augmentations")
        axis.set_ylabel("kNN top-1 (%)")
    fig.savefig(path, dpi=120)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("configs/cifar10_cpu.yaml"))
    parser.add_argument("--data", help="CIFAR-10 JPEG folder (train/ and test/); sets both sources")
    parser.add_argument(
        "--epochs", type=int, help="train.epochs of every cell (default: the config's)"
    )
    parser.add_argument(
        "--steps-per-epoch", type=int, help="cap at the recipe's batch size (a proxy)"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--noise-seeds", type=int, nargs="*", default=[1], help="full BYOL again")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 64, 128, 256])
    parser.add_argument("--knn-max-train", type=int, help="kNN bank size (default: whole split)")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--cells", nargs="+", help="run only the rows with these names")
    add_overrides(parser, help="config overrides for every cell")
    parser.add_argument("--output", type=Path, default=Path("runs/study"))
    add_record_option(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = " ".join(
        ["python benchmarks/quality/study.py", *(argv if argv is not None else sys.argv[1:])]
    )
    run_record = Record("study", args.record, command)
    try:
        recipe = load_config(args.config, base_overrides(args))
        cells = grid(args, recipe.train.batch_size)
        keyed = [(cell, cell_key(args, cell)) for cell in cells]
    except UsageError as error:
        print(f"study: error: {error}", file=sys.stderr)
        return 2
    args.output.mkdir(parents=True, exist_ok=True)
    done: dict[tuple[str, bool], dict] = {}
    results = []
    for number, (cell, key) in enumerate(keyed, 1):
        label = (
            f"[{number}/{len(keyed)}] {cell.section}: {cell.name} ({cell.method}, seed {cell.seed})"
        )
        result_path = (
            args.output / "cells" / key / ("random.json" if cell.random_init else "result.json")
        )
        if (key, cell.random_init) in done:
            result = done[(key, cell.random_init)]
            print(f"{label}: same config as an earlier cell", flush=True)
        elif result_path.is_file():
            result = json.loads(result_path.read_text())
            print(f"{label}: done before, skipped", flush=True)
        else:
            print(f"{label}: running in {result_path.parent}", flush=True)
            result = run_cell(args, cell, key)
            outcome = f"failed: {result['error']}" if result["error"] else "done"
            print(f"{label}: {outcome}", flush=True)
        done[(key, cell.random_init)] = result
        results.append({**result, **asdict(cell)})  # this row's section and name
    tables = {section: rows(section, results) for section in SECTIONS if section in args.only}
    (args.output / "study.json").write_text(
        json.dumps({"command": command, "tables": tables, "cells": results}, indent=2)
    )
    (args.output / "study.md").write_text(markdown(args, tables, command))
    figure(tables, args.output / "study.png")
    run_record.write(tables=tables)
    print(f"study written to {args.output / 'study.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
