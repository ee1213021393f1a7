"""Callbacks that turn a `fit` call into a durable, observable run."""

import time
from pathlib import Path

import keras
import tensorflow as tf


class Throughput(keras.callbacks.Callback):
    """Measures training images per second, leaving out the first (tracing) step.

    ```python
    meter = Throughput(batch_size=256)
    model.fit(data, callbacks=[meter])
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

    TensorFlow writes the checkpoint's data files first and then replaces the
    small `checkpoint` index atomically, so a kill during a write leaves the
    previous checkpoint as the latest one. `restore()` resumes the weights,
    the target network, the optimizer's state and its step counter, and so
    the τ and learning-rate schedules.

    ```python
    checkpoints = Checkpoints(model, "runs/x/checkpoints", every_steps=500)
    initial_epoch = checkpoints.restore(steps_per_epoch)
    model.fit(data, initial_epoch=initial_epoch, callbacks=[checkpoints])
    ```
    """

    def __init__(
        self,
        model: keras.Model,
        directory: str | Path,
        every_steps: int | None = None,
        keep: int = 2,
    ):
        super().__init__()
        self.every_steps = every_steps
        self._checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer)
        self._manager = tf.train.CheckpointManager(
            self._checkpoint, str(directory), max_to_keep=keep
        )

    @property
    def latest(self) -> str | None:
        return self._manager.latest_checkpoint

    def restore(self, steps_per_epoch: int) -> int:
        """Restores the latest checkpoint if there is one; returns the epoch to resume at."""
        if self.latest is None:
            return 0
        # Optimizer slots are created lazily; build them first so that the
        # restore fills them instead of deferring.
        self.model_to_restore.optimizer.build(self.model_to_restore.trainable_variables)
        self._checkpoint.restore(self.latest).assert_existing_objects_matched()
        iterations = int(self.model_to_restore.optimizer.iterations.numpy())
        return iterations // steps_per_epoch

    @property
    def model_to_restore(self) -> keras.Model:
        return self._checkpoint.model

    def save(self) -> str:
        step = int(self.model_to_restore.optimizer.iterations.numpy())
        return self._manager.save(checkpoint_number=step)

    def on_train_batch_end(self, batch, logs=None) -> None:
        if self.every_steps:
            step = int(self.model.optimizer.iterations.numpy())
            if step % self.every_steps == 0:
                self.save()

    def on_epoch_end(self, epoch, logs=None) -> None:
        if not self.every_steps:
            self.save()
