"""Callbacks that turn a `fit` call into a durable, observable run."""

import time
from pathlib import Path

import keras
import tensorflow as tf

from byol_keras.errors import TrainingDiverged, UsageError
from byol_keras.methods.steps import accumulation_steps, batches_done


class Throughput(keras.callbacks.Callback):
    """Measures training images per second, leaving out the first (tracing) step.

    ```python
    # doctest: slow
    model = BYOL(build_backbone("tiny", image_size=16, width=4))
    model.compile(optimizer="adam")
    source = load_source("digits", image_size=16)
    data = pair_dataset(source, make_augmenter("digits", image_size=16), 32)
    meter = Throughput(batch_size=32)
    model.fit(data, steps_per_epoch=2, callbacks=[meter])
    meter.images_per_second
    ```
    """

    def __init__(self, batch_size: int):
        super().__init__()
        self.batch_size = batch_size
        self.images_per_second: float | None = None
        self._started: float | None = None
        self._timed_steps = 0

    def on_train_batch_end(self, batch, logs=None) -> None:
        if self._started is None:
            self._started = time.perf_counter()
        else:
            self._timed_steps += 1

    def on_train_end(self, logs=None) -> None:
        if self._started is not None and self._timed_steps:
            elapsed = time.perf_counter() - self._started
            self.images_per_second = self._timed_steps * self.batch_size / elapsed


class Checkpoints(keras.callbacks.Callback):
    """Saves model and optimizer state with `tf.train.CheckpointManager`.

    With `every_steps` it saves every that many optimizer updates, else at
    each epoch's end; checkpoint `ckpt-N` holds the state after N batches.
    TensorFlow writes the data files under a temporary name first and then
    replaces the small `checkpoint` index atomically, so a kill during a
    write leaves the previous checkpoint as the latest one. `restore()`
    resumes the weights, the target network, the optimizer's state and its
    step counter, and so the τ and learning-rate schedules. A state with
    non-finite weights is never saved: `save()` raises `TrainingDiverged`.
    `restore_from` names another directory to restore from (a non-chief
    worker restores the chief's checkpoints and writes its own elsewhere).

    ```python
    model = BYOL(build_backbone("tiny", image_size=16, width=4))
    model.compile(optimizer="adam")
    checkpoints = Checkpoints(model, "runs/x/checkpoints", every_steps=500)
    done = checkpoints.restore()  # batches already trained, 0 for a new run
    assert done == 0
    ```
    """

    def __init__(
        self,
        model: keras.Model,
        directory: str | Path,
        every_steps: int | None = None,
        keep: int = 2,
        restore_from: str | Path | None = None,
    ):
        super().__init__()
        self.every_steps = every_steps
        self._restore_from = str(restore_from if restore_from is not None else directory)
        self._checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer)
        self._manager = tf.train.CheckpointManager(
            self._checkpoint, str(directory), max_to_keep=keep
        )

    @property
    def latest(self) -> str | None:
        return self._manager.latest_checkpoint

    @property
    def latest_to_restore(self) -> str | None:
        """The checkpoint `restore()` would restore, None when there is none."""
        return tf.train.latest_checkpoint(self._restore_from)

    def restore(self) -> int:
        """Restores the latest checkpoint if there is one; returns the batches it had trained."""
        latest = self.latest_to_restore
        if latest is None:
            return 0
        # Optimizer slots are created lazily; build them first so that the
        # restore fills them instead of deferring.
        self.model_to_restore.optimizer.build(self.model_to_restore.trainable_variables)
        try:
            self._checkpoint.restore(latest).assert_existing_objects_matched()
        except (AssertionError, ValueError) as error:  # shapes or objects that differ
            first_line = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
            raise UsageError(
                f"checkpoint {latest} does not fit this model ({first_line}); "
                "use a new --output to start afresh"
            ) from None
        return batches_done(self.model_to_restore.optimizer)

    @property
    def model_to_restore(self) -> keras.Model:
        return self._checkpoint.model

    def save(self) -> str:
        model = self.model_to_restore
        step = batches_done(model.optimizer)
        if not all(bool(tf.reduce_all(tf.math.is_finite(w))) for w in _float_weights(model)):
            raise TrainingDiverged(
                f"training diverged: the weights are not finite at step {step}; "
                f"not saved, the latest checkpoint is still {self.latest}"
            )
        return self._manager.save(checkpoint_number=step)

    def on_train_batch_end(self, batch, logs=None) -> None:
        if self.every_steps:
            # In batches, so that a save lands on an update, never mid-accumulation.
            every = self.every_steps * accumulation_steps(self.model.optimizer)
            if batches_done(self.model.optimizer) % every == 0:
                self.save()

    def on_epoch_end(self, epoch, logs=None) -> None:
        if not self.every_steps:
            self.save()


def _float_weights(model: keras.Model) -> list:
    return [w for w in model.weights if "float" in str(w.dtype)]
