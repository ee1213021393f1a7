"""Splits what is left of a run into `fit` calls, so that a resumed run continues mid-epoch."""

from dataclasses import dataclass


@dataclass(frozen=True)
class FitCall:
    """The arguments of one `model.fit` call: epochs `[initial_epoch, epochs)` of `steps` each."""

    initial_epoch: int
    epochs: int
    steps_per_epoch: int


def remaining_fit_calls(steps_done: int, steps_per_epoch: int, epochs: int) -> list[FitCall]:
    """The `fit` calls that train the batches after `steps_done` and no more.

    A run stopped inside an epoch first finishes that epoch with a short
    call, then runs the whole epochs left, so that the total number of
    batches is exactly `epochs × steps_per_epoch`.

    ```python
    remaining_fit_calls(25, steps_per_epoch=10, epochs=4)
    # [FitCall(2, 3, 5), FitCall(3, 4, 10)]
    ```
    """
    epoch, into_epoch = divmod(steps_done, steps_per_epoch)
    calls = []
    if into_epoch and epoch < epochs:
        calls.append(FitCall(epoch, epoch + 1, steps_per_epoch - into_epoch))
        epoch += 1
    if epoch < epochs:
        calls.append(FitCall(epoch, epochs, steps_per_epoch))
    return calls
