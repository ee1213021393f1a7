"""The `byol-keras` command line: train, evaluate, visualize, embed and export.

Usage and config errors print one line, `byol-keras: error: ...`, and exit
with code 2; a diverged training run, or a disk that refuses a write (read-only,
full), prints the same kind of line and exits 1.
Ctrl-C or SIGTERM during `train` saves a checkpoint, prints one line and
exits with 130 or 143.
TensorFlow's own start-up messages are hidden unless `--verbose` is given or
`TF_CPP_MIN_LOG_LEVEL` is set.
"""

import argparse
import importlib.metadata
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

from byol_keras.errors import (
    ExportError,
    TrainingDiverged,
    TrainingInterrupted,
    UsageError,
    write_failure,
)
from byol_keras.tasks import TASKS, dense_tasks, listed
from byol_keras.training.resume import RESUME_WITH_CHANGES

QUICKSTART = Path(__file__).with_name("quickstart.yaml")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="byol-keras", description="BYOL self-supervised pretraining for Keras 3."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    dense = dense_tasks()  # each adds its --kind, its --model and the option naming its result

    train = commands.add_parser("train", help="pretrain a backbone with BYOL")
    train.add_argument("--config", help="YAML config (default: the digits quickstart)")
    add_overrides(train)
    train.add_argument("--output", help="run directory (default: runs/<config name>)")
    train.add_argument(
        RESUME_WITH_CHANGES,
        action="store_true",
        help="resume the checkpoints in --output although the config differs from theirs "
        "(e.g. more epochs, a lower learning rate)",
    )

    evaluate = commands.add_parser("evaluate", help="linear probe, kNN, fine-tuning or retrieval")
    evaluate.add_argument("--run", required=True, help="run directory of a finished training")
    evaluate.add_argument(
        "--protocol",
        required=True,
        choices=tuple(TASKS),
    )
    evaluate.add_argument("--data", help="labelled source (default: the run's data.val_source)")
    evaluate.add_argument(
        "--label-fraction",
        type=float,
        help=f"{', '.join(t.protocol for t in TASKS.values() if t.label_fraction)}: "
        "0.01, 0.1 or 1.0",
    )
    evaluate.add_argument("--baseline", choices=("random",), help="evaluate an untrained copy")
    add_overrides(evaluate)

    visualize = commands.add_parser("visualize", help="pictures of the representation")
    visualize.add_argument("--run", required=True, help="run directory of a finished training")
    visualize.add_argument(
        "--kind",
        required=True,
        choices=(
            "tsne",
            "retrieval",
            "occlusion",
            "curves",
            "label-efficiency",
            *(t.picture for t in dense),
        ),
    )
    visualize.add_argument("--data", help="labelled source (default: the run's data.val_source)")
    visualize.add_argument("--output", help="PNG file or folder (default: <run>/pictures)")
    for task in dense:
        visualize.add_argument(
            f"--{task.model}",
            help=f"{task.picture}: the result to draw, e.g. {task.protocol}-10pct "
            f"(default: {task.protocol})",
        )

    embed = commands.add_parser("embed", help="embeddings of every image of a source, to a file")
    embed.add_argument("--run", required=True, help="run directory of a finished training")
    embed.add_argument(
        "--data", required=True, help="source: folder:PATH, npz:PATH, tfds:NAME, digits"
    )
    embed.add_argument("--output", required=True, help=".npy (and a .csv beside it) or .parquet")
    embed.add_argument("--batch-size", type=int, default=256, help="images per batch (256)")
    embed.add_argument("--what", default="backbone", choices=("backbone", "projection"))
    embed.add_argument(
        "--split",
        dest="splits",
        action="append",
        help="split to embed (repeatable; default: all of the source's splits)",
    )

    export = commands.add_parser(
        "export", help="SavedModel (TF Serving) and ONNX export, or a KerasHub preset"
    )
    export.add_argument("--run", required=True, help="run directory of a finished training")
    export.add_argument(
        "--format", default="all", choices=("saved_model", "onnx", "all", "keras-hub")
    )
    export.add_argument("--output", help="export directory (default: <run>/export)")
    export.add_argument(
        "--model",
        default="backbone",
        choices=("backbone", *(task.model for task in dense)),
        help=f"the backbone, or the {listed(t.model for t in dense)} kept by evaluate "
        f"--protocol {listed(t.protocol for t in dense)}",
    )
    for task in dense:
        export.add_argument(
            f"--{task.model}",
            help=f"{task.model}: the result to export, e.g. {task.protocol}-10pct "
            f"(default: {task.protocol})",
        )
    export.add_argument("--name", help="model name for TF Serving (default: byol_<model>)")
    export.add_argument("--version", type=int, help="version number (default: next free)")
    export.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 17)")
    for command in (train, evaluate, visualize, embed, export):
        command.add_argument(
            "--verbose",
            action="store_true",
            help="also show TensorFlow's own log messages (start-up, tf.data, absl)",
        )
    return parser


def package_version() -> str:
    """The installed distribution's version, else the version of the package on the path."""
    try:
        return importlib.metadata.version("byol-keras")
    except importlib.metadata.PackageNotFoundError:
        from byol_keras import __version__

        return __version__


def add_overrides(
    parser: argparse.ArgumentParser,
    help: str = "override config keys, e.g. --set train.epochs=3 data.image_size=32 (repeatable)",
) -> None:
    """Add the `--set KEY=VALUE ...` option, collected into `args.overrides`."""
    parser.add_argument(
        "--set",
        dest="overrides",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help=help,
    )


def run_train(args: argparse.Namespace) -> int:
    from byol_keras.config import load_config

    config_path = Path(args.config) if args.config else QUICKSTART
    config = load_config(config_path, args.overrides)
    from byol_keras.pretrain import train

    output = Path(args.output or Path("runs") / config_path.stem)
    args.output = str(output)  # named if the disk refuses a write
    summary = train(config, output, resume_with_changes=args.resume_with_changes)
    if config.eval.final_linear_probe:
        from byol_keras.evaluation.evaluate import compare_with_random_init

        summary = compare_with_random_init(output)
    print(json.dumps(summary, indent=2, sort_keys=True))
    print(f"run written to {output}")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from byol_keras.evaluation.evaluate import evaluate_run

    result = evaluate_run(
        args.run,
        protocol=args.protocol,
        data=args.data,
        label_fraction=args.label_fraction,
        baseline=args.baseline,
        overrides=args.overrides,
    )
    print(result["summary_line"])
    return 0


def run_visualize(args: argparse.Namespace) -> int:
    from byol_keras.evaluation.pictures import visualize_run

    paths = visualize_run(
        args.run,
        kind=args.kind,
        data=args.data,
        output=args.output,
        **_chosen_results(args),
    )
    for path in paths:
        print(path)
    return 0


def _chosen_results(args: argparse.Namespace) -> dict:
    """`--segmenter`, `--detector`, ...: the result each dense task's option names."""
    return {task.model: getattr(args, task.model) for task in dense_tasks()}


def run_embed(args: argparse.Namespace) -> int:
    from byol_keras.evaluation.embed import embed_run

    result = embed_run(
        args.run,
        args.data,
        args.output,
        batch_size=args.batch_size,
        what=args.what,
        splits=args.splits,
    )
    listing = "" if result["listing"] == result["output"] else f" and {result['listing']}"
    print(
        f"embedded {result['rows']} images ({result['what']}, {result['dim']} floats each, "
        f"{result['skipped_files']} skipped) -> {result['output']}{listing}"
    )
    return 0


def run_export(args: argparse.Namespace) -> int:
    from byol_keras.export.run import export_run

    manifest = export_run(
        args.run,
        formats=("saved_model", "onnx")
        if args.format == "all"
        else (args.format.replace("-", "_"),),
        output=args.output,
        name=args.name,
        version=args.version,
        opset=args.opset,
        model=args.model,
        **_chosen_results(args),
    )
    print(json.dumps(manifest["verification"], indent=2))
    print(f"exported to {manifest['version_dir']}")
    return 0


HANDLERS = {
    "train": run_train,
    "evaluate": run_evaluate,
    "visualize": run_visualize,
    "embed": run_embed,
    "export": run_export,
}


class _PackageLoggerNames(logging.Formatter):
    """Shows every module's logger (`byol_keras.data.source`) as `byol_keras`, as users see it."""

    def format(self, record: logging.LogRecord) -> str:
        if record.name.startswith("byol_keras."):
            record = logging.makeLogRecord({**record.__dict__, "name": "byol_keras"})
        return super().format(record)


def main(argv: list[str] | None = None) -> int:
    """Runs the command line; returns the exit code (2 for usage and config errors)."""
    args = build_parser().parse_args(argv)
    quiet_tensorflow_start(verbose=args.verbose)
    handler = logging.StreamHandler()
    handler.setFormatter(_PackageLoggerNames("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    if not args.verbose:
        # TensorFlow's absl logger reports every tf.data sharding decision at INFO.
        logging.getLogger("absl").setLevel(logging.WARNING)
    try:
        return HANDLERS[args.command](args)
    except UsageError as error:
        print(f"byol-keras: error: {error}", file=sys.stderr)
        return 2
    except TrainingDiverged as error:  # the run went wrong, not the command: exit 1
        print(f"byol-keras: error: {error}", file=sys.stderr)
        return 1
    except ExportError as error:  # an artifact failed its checks: not the user's mistake
        print(f"byol-keras: export failed: {error}", file=sys.stderr)
        return 1
    except TrainingInterrupted as stop:  # the shell's code for a process ended by the signal
        print(f"byol-keras: {stop}", file=sys.stderr)
        return 128 + stop.signum
    except KeyboardInterrupt:  # Ctrl-C outside training: nothing to save
        print("byol-keras: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # a read-only or full disk is no bug to show a traceback for
        line = write_failure(error, getattr(args, "output", None) or getattr(args, "run", None))
        if line is None:
            raise
        print(f"byol-keras: error: {line}", file=sys.stderr)
        return 1


def quiet_tensorflow_start(verbose: bool = False) -> None:
    """Imports TensorFlow without its C++ start-up log lines, unless they were asked for.

    TensorFlow logs oneDNN, CUDA and CPU-feature notices while it is being
    imported, partly before its logging is set up (absl then writes every
    message to stderr, whatever `TF_CPP_MIN_LOG_LEVEL` says). So the import
    runs with file descriptor 2 pointed at a temporary file, replayed only if
    the import fails, and level 3 hides the later ones, such as `cuInit`'s
    error on machines without a GPU. `TF_ENABLE_ONEDNN_OPTS` stays as it is:
    it changes the numerics, not just the messages. With `verbose`, or when
    the user set `TF_CPP_MIN_LOG_LEVEL`, TensorFlow prints what it prints.
    """
    if verbose or "TF_CPP_MIN_LOG_LEVEL" in os.environ or "tensorflow" in sys.modules:
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    sys.stderr.flush()
    saved_stderr = os.dup(2)
    with tempfile.TemporaryFile() as start_up_log:
        os.dup2(start_up_log.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        except BaseException:
            os.dup2(saved_stderr, 2)
            start_up_log.seek(0)
            sys.stderr.write(start_up_log.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved_stderr, 2)
            os.close(saved_stderr)


if __name__ == "__main__":
    sys.exit(main())
