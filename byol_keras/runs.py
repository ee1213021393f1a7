"""The run directory: the hub that training writes and evaluation and export read.

It names every file of a run (`RunDirectory`), writes them atomically
(`atomic_write_text`), loads the trained networks back (`load_networks`) and
finds the results that evaluation protocols kept (`RunDirectory.find_result`).
Evaluation and export both build on this module and never on each other.
"""

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from byol_keras.config import Config
from byol_keras.errors import UsageError

if TYPE_CHECKING:  # Keras loads only when a network does: the CLI starts without it.
    import keras

log = logging.getLogger(__name__)


class RunDirectory:
    """Names every file a training run writes, so that readers need not guess.

    `summary.json` is written last, atomically, with `"finished": true`: it is
    the marker of a finished run. Training removes it before it changes
    anything else, so a run that stops half-way is never taken for finished.

    ```python
    run = RunDirectory("runs/quickstart")
    run.model_path      # runs/quickstart/model.keras
    run.read_summary()  # {"epochs": ..., "final_loss": ..., "finished": True}
    ```
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)

    config_path = property(lambda self: self.root / "config.yaml")
    metrics_path = property(lambda self: self.root / "metrics.csv")
    logs_dir = property(lambda self: self.root / "logs")
    checkpoints_dir = property(lambda self: self.root / "checkpoints")
    model_path = property(lambda self: self.root / "model.keras")
    backbone_path = property(lambda self: self.root / "backbone.keras")
    summary_path = property(lambda self: self.root / "summary.json")
    budget_path = property(lambda self: self.root / "budget.json")  # train.time_budget's plan
    eval_dir = property(lambda self: self.root / "eval")
    pictures_dir = property(lambda self: self.root / "pictures")
    superseded_dir = property(lambda self: self.root / "superseded")
    lock_path = property(lambda self: self.root / ".lock")

    def create(self) -> "RunDirectory":
        self.root.mkdir(parents=True, exist_ok=True)
        return self

    def require_finished(self) -> "RunDirectory":
        """Raises `UsageError` unless the run exists, finished, and kept its files."""
        if not self.root.is_dir():
            raise UsageError(f"--run: run directory '{self.root}' does not exist")
        unfinished = f"--run: '{self.root}' is not a finished run"
        rerun = "rerun the same `byol-keras train` command to finish it"
        if not self.summary_path.is_file():
            raise UsageError(f"{unfinished} (no {self.summary_path.name}); {rerun}")
        if self.read_summary().get("finished") is not True:
            raise UsageError(
                f"{unfinished} ({self.summary_path.name} has no finished mark); {rerun}"
            )
        for path in (self.config_path, self.model_path, self.backbone_path):
            if not path.is_file():
                raise UsageError(f"{unfinished}: {path.name} is missing")
        return self

    def read_summary(self) -> dict:
        """The summary, `{}` when there is none; `UsageError` when it is not a JSON object."""
        if not self.summary_path.is_file():
            return {}
        try:
            summary = json.loads(self.summary_path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise UsageError(f"--run: {self.summary_path} is corrupted ({error})") from None
        if not isinstance(summary, dict):
            raise UsageError(f"--run: {self.summary_path} is corrupted (not a JSON object)")
        return summary

    def write_summary(self, summary: dict) -> None:
        """Replaces summary.json atomically; keep `"finished"` from `read_summary()` to stay so."""
        atomic_write_text(self.summary_path, json.dumps(summary, indent=2, sort_keys=True))

    def finish(self, summary: dict) -> dict:
        """Writes the final summary with the finished mark; the last write of a training run."""
        summary = {**summary, "finished": True}
        self.write_summary(summary)
        return summary

    def mark_unfinished(self) -> None:
        """Drops the finished mark before training changes the run's checkpoints and models."""
        self.summary_path.unlink(missing_ok=True)

    def set_aside_results(self, step: int) -> Path | None:
        """Moves `eval/` and `pictures/` to `superseded/step-<step>/`, before training changes
        the weights they were computed from; returns where, or None when there were none.

        ```python
        run = RunDirectory("runs/retrained").create()
        run.eval_dir.mkdir()
        (run.eval_dir / "knn.json").write_text("{}")
        assert run.set_aside_results(step=420) == run.root / "superseded" / "step-420"
        ```
        """
        results = [path for path in (self.eval_dir, self.pictures_dir) if path.exists()]
        if not results:
            return None
        target = self.superseded_dir / f"step-{step}"
        again = 1
        while target.exists():  # the same weights retrained twice: keep both sets
            again += 1
            target = self.superseded_dir / f"step-{step}-{again}"
        target.mkdir(parents=True)
        for path in results:
            path.rename(target / path.name)
        log.warning(
            "%s came from the weights of step %d, which training now changes: moved to %s",
            " and ".join(f"{path.name}/" for path in results),
            step,
            target,
        )
        return target

    def write_config(self, config: Config) -> None:
        """Writes the resolved config: what this run was, and will resume, trained with."""
        atomic_write_text(self.config_path, yaml.safe_dump(config.to_dict(), sort_keys=False))

    def find_result(self, protocol: str, name: str | None, option: str) -> tuple[dict, Path]:
        """The result JSON and kept model of a `protocol` evaluation (`segment`, ...) named `name`.

        `name` defaults to the protocol's plain result (`eval/segment.json`), or
        to the only result of that protocol when there is just one. `option`
        is the command-line option that named it, for the error message.

        ```python
        # doctest: raises UsageError
        run = RunDirectory("runs/quickstart")
        result, model_path = run.find_result("segment", "segment-10pct", "--segmenter")  # none yet
        ```
        """
        found = (
            sorted(p.stem for p in self.eval_dir.glob(f"{protocol}*.json"))
            if self.eval_dir.is_dir()
            else []
        )
        name = name or (protocol if protocol in found or len(found) != 1 else found[0])
        path = self.eval_dir / f"{name}.json"
        model_path = self.eval_dir / name / "model.keras"
        if not path.is_file() or not model_path.is_file():
            have = ", ".join(found) or "none"
            raise UsageError(
                f"{option}: run '{self.root}' has no {protocol} result {name!r} with its model "
                f"(found: {have}); run `byol-keras evaluate --run {self.root} "
                f"--protocol {protocol}` first"
            )
        try:
            result = json.loads(path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise UsageError(f"{option}: {path} is corrupted ({error})") from None
        return result, model_path

    def read_config_dict(self) -> dict | None:
        """The recorded config as nested dicts, or None when it is missing or unreadable."""
        try:
            recorded = yaml.safe_load(self.config_path.read_text())
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            return None
        return recorded if isinstance(recorded, dict) else None


def load_networks(run: RunDirectory) -> tuple["keras.Model", "keras.Model"]:
    """The online backbone from backbone.keras and the online projector from model.keras.

    Both compute in float32 even when the run trained in mixed precision, so
    that `byol-keras embed` computes what the exported artifacts compute.

    ```python
    backbone, projector = load_networks(RunDirectory("runs/quickstart").require_finished())
    ```
    """
    from byol_keras.nn.precision import compute_dtypes, float32_copy
    from byol_keras.registration import load_model

    backbone = load_model(run.backbone_path, compile=False)
    projector = load_model(run.model_path, compile=False).online_projector
    if compute_dtypes(backbone) | compute_dtypes(projector) != {"float32"}:
        log.info("the run trained in mixed precision; using a float32 copy")
        backbone, projector = float32_copy(backbone), float32_copy(projector)
    return backbone, projector


def check_writable(folder: str | Path, option: str) -> Path:
    """Makes `folder` if needed and a file in it; `UsageError` naming `option` if the disk refuses.

    Commands call it before their work, so that a read-only disk or a path
    under a regular file is refused in one line, not after an hour of work.

    ```python
    check_writable("runs/quickstart/eval", "--run")
    ```
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{option}: '{folder}' exists and is not a directory")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise UsageError(f"{option}: cannot write to '{folder}' ({error.strerror})") from None
    return folder


def atomic_write_text(path: str | Path, text: str) -> None:
    """Writes `text` to `path` so that a crash leaves either the old or the new file.

    The file gets the mode a plain `open(path, "w")` would give it: that of
    the file it replaces, else 0666 less the umask (`mkstemp` makes 0600).
    """
    path = Path(path)
    try:
        mode = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o666 & ~_umask()
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w") as stream:
            stream.write(text)
            stream.flush()
            os.fchmod(stream.fileno(), mode)
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        Path(temporary).unlink(missing_ok=True)
        if isinstance(error, OSError) and error.filename is None:  # a failed write() names none
            raise OSError(error.errno, error.strerror, str(path)) from error
        raise


def _umask() -> int:
    # Linux reports it without changing it; os.umask can only read by setting,
    # which would race with other threads creating files.
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
