"""The layout of a run directory, shared by training, evaluation and export."""

import json
import os
import tempfile
from pathlib import Path

from byol_keras.errors import UsageError


class RunDirectory:
    """Names every file a training run writes, so that readers need not guess.

    ```python
    run = RunDirectory("runs/quickstart")
    run.model_path      # runs/quickstart/model.keras
    run.read_summary()  # {"epochs": ..., "final_loss": ...}
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

    def create(self) -> "RunDirectory":
        self.root.mkdir(parents=True, exist_ok=True)
        return self

    def require_finished(self) -> "RunDirectory":
        """Raises `UsageError` unless the run exists and saved its final model."""
        if not self.root.is_dir():
            raise UsageError(f"--run: run directory '{self.root}' does not exist")
        if not self.model_path.is_file() or not self.backbone_path.is_file():
            raise UsageError(
                f"--run: '{self.root}' has no finished model (expected {self.model_path.name} "
                f"and {self.backbone_path.name}; did training complete?)"
            )
        return self

    def read_summary(self) -> dict:
        return json.loads(self.summary_path.read_text()) if self.summary_path.is_file() else {}

    def write_summary(self, summary: dict) -> None:
        atomic_write_text(self.summary_path, json.dumps(summary, indent=2, sort_keys=True))


def atomic_write_text(path: str | Path, text: str) -> None:
    """Writes `text` to `path` so that a crash leaves either the old or the new file."""
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
