"""Resuming a run: which config changes a checkpoint allows, and the `fit` calls left to run."""

from dataclasses import dataclass

from byol_keras.catalog import METHODS
from byol_keras.config import Config, from_dict
from byol_keras.errors import UsageError
from byol_keras.tasks import task_sections

RESUME_WITH_CHANGES = "--resume-with-changes"

# Keys that decide the shape or the kind of the saved variables: a checkpoint
# written with other values cannot be restored into the model these build.
STRUCTURAL_KEYS = (
    "data.image_size",
    "augment.on_device",
    "model.backbone",
    "model.stem",
    "model.width",
    "model.projection_dim",
    "model.projector_hidden_dim",
    "model.predictor_hidden_dim",
    "model.method",
    "model.predictor",
    "optimizer.name",
    "train.accumulation_steps",
    "train.precision",
)
# Keys that change how a run is watched or saved, not what it learns: free to change.
UNCHECKED_KEYS = (
    "train.verbose",
    "train.checkpoint_every_steps",
    "train.keep_checkpoints",
    "train.collapse_threshold",
    "train.collapse_patience",
)
UNCHECKED_SECTIONS = task_sections()


def check_config_change(
    recorded: dict | None, config: Config, allow_changes: bool, where: str
) -> list[str]:
    """The keys in which `config` differs from the run's `recorded` config; raises if refused.

    `recorded` is the config that the checkpoints in `where` were trained
    with (None when it is unreadable). Any difference in the keys that
    matter raises `UsageError` naming them, unless `allow_changes`
    (`--resume-with-changes`); a structural key raises even then.

    ```python
    # doctest: raises UsageError
    recorded = load_config("configs/quickstart.yaml").to_dict()
    config = load_config("configs/quickstart.yaml", ["optimizer.base_lr=0.1"])
    check_config_change(recorded, config, allow_changes=False, where="runs/quickstart")
    # UsageError: ... differs from the config it was trained with: optimizer.base_lr (...)
    ```
    """
    fresh = "use a new --output (or delete the directory) to start afresh"
    if recorded is None:
        if allow_changes:
            return []
        raise UsageError(
            f"--output: '{where}' has checkpoints but no readable config.yaml to compare with; "
            f"rerun with {RESUME_WITH_CHANGES} to resume them with this config, or {fresh}"
        )
    before, after = (
        _resolved(_flatten(_normalised(recorded))),
        _resolved(_flatten(config.to_dict())),
    )
    changed = [
        key
        for key in sorted(set(before) | set(after))
        if before.get(key) != after.get(key) and not _unchecked(key)
    ]
    structural = [key for key in changed if key in STRUCTURAL_KEYS]
    if structural:
        raise UsageError(
            f"--output: '{where}' holds checkpoints of another model "
            f"({_describe(structural, before, after)}); they cannot be restored into this one, "
            f"even with {RESUME_WITH_CHANGES}; {fresh}"
        )
    if changed and not allow_changes:
        raise UsageError(
            f"--output: the config differs from the one '{where}' was trained with "
            f"({_describe(changed, before, after)}); rerun with {RESUME_WITH_CHANGES} to resume "
            f"with the new values, or {fresh}"
        )
    return changed


def _normalised(recorded: dict) -> dict:
    """The recorded config with today's defaults filled in, so that new keys do not differ."""
    try:
        return from_dict(recorded).to_dict()
    except (UsageError, TypeError, AttributeError):
        return recorded  # a config this version no longer accepts: compare it as written


def _resolved(flat: dict) -> dict:
    """`flat` with `model.predictor: null` replaced by the method's own choice, which it means."""
    method = METHODS.get(flat.get("model.method"))
    if flat.get("model.predictor") is None and method is not None:
        return {**flat, "model.predictor": method.predictor}
    return flat


def _flatten(config: dict) -> dict:
    flat = {}
    for section, values in config.items():
        if isinstance(values, dict):
            flat.update({f"{section}.{key}": value for key, value in values.items()})
        else:
            flat[str(section)] = values
    return flat


def _unchecked(key: str) -> bool:
    return key in UNCHECKED_KEYS or key.split(".", 1)[0] in UNCHECKED_SECTIONS


def _describe(keys: list[str], before: dict, after: dict, shown: int = 4) -> str:
    parts = [f"{key}: {_short(before.get(key))} -> {_short(after.get(key))}" for key in keys]
    more = f", and {len(parts) - shown} more" if len(parts) > shown else ""
    return ", ".join(parts[:shown]) + more


def _short(value, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class FitCall:
    """The arguments of one `model.fit` call: epochs `[initial_epoch, epochs)` of `steps` each."""

    initial_epoch: int
    epochs: int
    steps_per_epoch: int


def remaining_fit_calls(steps_done: int, steps_per_epoch: int, total_steps: int) -> list[FitCall]:
    """The `fit` calls that train the batches after `steps_done` up to `total_steps`, no more.

    A run stopped inside an epoch first finishes that epoch with a short
    call, then runs the whole epochs left; when `total_steps` is not a whole
    number of epochs (a time budget's plan), a last short call trains the
    start of one more epoch.

    ```python
    calls = remaining_fit_calls(25, steps_per_epoch=10, total_steps=43)
    assert calls == [FitCall(2, 3, 5), FitCall(3, 4, 10), FitCall(4, 5, 3)]
    ```
    """
    if steps_done >= total_steps:
        return []
    epoch, into_epoch = divmod(steps_done, steps_per_epoch)
    whole_epochs, rest = divmod(total_steps, steps_per_epoch)
    calls = []
    if into_epoch:
        epoch_end = min((epoch + 1) * steps_per_epoch, total_steps)
        calls.append(FitCall(epoch, epoch + 1, epoch_end - steps_done))
        epoch += 1
    if epoch < whole_epochs:
        calls.append(FitCall(epoch, whole_epochs, steps_per_epoch))
        epoch = whole_epochs
    if rest and epoch == whole_epochs:
        calls.append(FitCall(epoch, epoch + 1, rest))
    return calls
