"""Ctrl-C and SIGTERM during training: a checkpoint at the next update, then a clean exit."""

import signal
import threading

import keras

from byol_keras.errors import TrainingInterrupted
from byol_keras.methods.steps import accumulation_steps, batches_done
from byol_keras.training.callbacks import Checkpoints

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopOnSignal(keras.callbacks.Callback):
    """Saves a checkpoint at the first update boundary after SIGINT or SIGTERM, then stops.

    Use it as a context manager around the `fit` calls: it installs its
    handlers on entry and puts the previous ones back on exit. A signal only
    sets a flag; the next batch that completes an optimizer update saves
    through `checkpoints.save()` (so never mid-accumulation, and never a
    diverged state: place it after `StopOnNonFiniteLoss`) and raises
    `TrainingInterrupted`. A second signal before then acts as it would
    without this callback, for a user who does not want to wait.

    ```python
    # doctest: slow
    from byol_keras.training.callbacks import Checkpoints
    from byol_keras.training.guards import StopOnNonFiniteLoss

    model = BYOL(build_backbone("tiny", image_size=16, width=4))
    model.compile(optimizer="adam")
    source = load_source("digits", image_size=16)
    data = pair_dataset(source, make_augmenter("digits", image_size=16), 32)
    checkpoints = Checkpoints(model, "ckpt")
    with StopOnSignal(checkpoints) as stop:  # SIGINT, SIGTERM: save a checkpoint, then stop
        model.fit(data, steps_per_epoch=2, callbacks=[StopOnNonFiniteLoss(), checkpoints, stop])
    ```
    """

    def __init__(self, checkpoints: Checkpoints):
        super().__init__()
        self.checkpoints = checkpoints
        self.received: int | None = None
        self._previous: dict = {}

    def __enter__(self) -> "StopOnSignal":
        # Python only lets the main thread install handlers; elsewhere signals keep their effect.
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                # An ignored signal (a background job's SIGINT) stays ignored.
                if signal.getsignal(sig) is not signal.SIG_IGN:
                    self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        if self.received is None:
            self.received = signum
            return
        previous = self._previous.get(signum, signal.SIG_DFL)
        self.__exit__()
        if callable(previous):
            previous(signum, frame)
        else:
            signal.raise_signal(signum)

    def on_train_batch_end(self, batch, logs=None) -> None:
        optimizer = self.model.optimizer
        if (
            self.received is not None
            and batches_done(optimizer) % accumulation_steps(optimizer) == 0
        ):
            self.stop()

    def stop(self) -> None:
        """Saves (unless the latest checkpoint is this step already) and raises."""
        step = batches_done(self.checkpoints.model_to_restore.optimizer)
        if self.checkpoints.latest is None or not self.checkpoints.latest.endswith(f"-{step}"):
            self.checkpoints.save()
        raise TrainingInterrupted(self.received, step)
