"""Callbacks that watch training misbehave: a non-finite loss, a collapsing representation."""

import logging
import math

import keras

from byol_keras.errors import TrainingDiverged
from byol_keras.methods.steps import batches_done

log = logging.getLogger(__name__)

COLLAPSE_CAUSES = (
    "learning rate too high",
    "τ too low (the target moves too fast; raise model.tau_base)",
    "predictor missing or too weak",
    "augmentation too weak (the two views are too alike)",
    "batch too small for BatchNorm's statistics",
)


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops training with `TrainingDiverged` at the first step whose loss is NaN or Inf.

    Place it before `Checkpoints`: the exception ends the step before any
    later callback runs, so the diverged state is never saved and the
    latest checkpoint stays the last good one.

    ```python
    # doctest: slow
    from byol_keras.training.callbacks import Checkpoints

    model = BYOL(build_backbone("tiny", image_size=16, width=4))
    model.compile(optimizer="adam")
    source = load_source("digits", image_size=16)
    data = pair_dataset(source, make_augmenter("digits", image_size=16), 32)
    guards = [StopOnNonFiniteLoss(), Checkpoints(model, "ckpt")]
    model.fit(data, steps_per_epoch=2, callbacks=guards)
    ```
    """

    def __init__(self):
        super().__init__()
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None) -> None:
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None) -> None:
        # The logged loss is the epoch's running mean, so it turns non-finite
        # on the first bad step and stays so.
        loss = (logs or {}).get("loss")
        if loss is None or math.isfinite(float(loss)):
            return
        step = batches_done(self.model.optimizer)
        raise TrainingDiverged(
            f"training diverged: the loss is {float(loss)} at step {step} "
            f"(epoch {self._epoch + 1}); nothing after the last checkpoint was saved, "
            "lower optimizer.base_lr and rerun with --resume-with-changes to resume from it"
        )


class CollapseWarning(keras.callbacks.Callback):
    """Warns once the collapse indicator stays under `threshold` for `patience` epochs in a row.

    The indicator (the `collapse` metric) is about 1 when training is healthy
    and falls towards 0 when every image maps to the same point. Warnings
    are logged and kept in `warnings`, for the run summary.

    ```python
    # doctest: slow
    model = BYOL(build_backbone("tiny", image_size=16, width=4))
    model.compile(optimizer="adam")
    source = load_source("digits", image_size=16)
    data = pair_dataset(source, make_augmenter("digits", image_size=16), 32)
    watch = CollapseWarning(threshold=0.05, patience=3)
    model.fit(data, steps_per_epoch=2, callbacks=[watch])
    watch.warnings  # [] when healthy
    ```
    """

    def __init__(self, threshold: float, patience: int):
        super().__init__()
        self.threshold = threshold
        self.patience = patience
        self.warnings: list[str] = []
        self._low_epochs = 0

    def on_epoch_end(self, epoch, logs=None) -> None:
        value = (logs or {}).get("collapse")
        if value is None:
            return
        value = float(value)
        # NaN counts as collapsed: it compares false with everything.
        self._low_epochs = 0 if value >= self.threshold else self._low_epochs + 1
        if self._low_epochs == self.patience:  # once per streak, not every epoch after
            message = (
                f"representation collapse: the collapse indicator stayed below "
                f"{self.threshold} for {self.patience} epochs (now {value:.3g} after epoch "
                f"{epoch + 1}); usual causes: {'; '.join(COLLAPSE_CAUSES)}"
            )
            log.warning(message)
            self.warnings.append(message)
