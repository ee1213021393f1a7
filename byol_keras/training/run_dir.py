"""The layout of a run directory, shared by training, evaluation and export."""

import json
import os
import tempfile
from pathlib import Path

import yaml

from byol_keras.config import Config
from byol_keras.errors import UsageError


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
    eval_dir = property(lambda self: self.root / "eval")
    pictures_dir = property(lambda self: self.root / "pictures")
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

    def write_config(self, config: Config) -> None:
        """Writes the resolved config: what this run was, and will resume, trained with."""
        atomic_write_text(self.config_path, yaml.safe_dump(config.to_dict(), sort_keys=False))

    def read_config_dict(self) -> dict | None:
        """The recorded config as nested dicts, or None when it is missing or unreadable."""
        try:
            recorded = yaml.safe_load(self.config_path.read_text())
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            return None
        return recorded if isinstance(recorded, dict) else None


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
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
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
