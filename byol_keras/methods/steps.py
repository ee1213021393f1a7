"""Step counting under gradient accumulation: batches that `fit` ran versus optimizer updates.

Keras 3 optimizers count every `apply` call in the private `_iterations`
variable, but `optimizer.iterations` is that count floor-divided by
`gradient_accumulation_steps`, so it counts real updates. Resuming `fit`
needs the first (batches), while τ and the learning rate need the second.
"""

import keras
from keras import ops


def accumulation_steps(optimizer: keras.optimizers.Optimizer) -> int:
    """How many batches make one optimizer update (1 without gradient accumulation)."""
    return int(optimizer.gradient_accumulation_steps or 1)


def batches_done(optimizer: keras.optimizers.Optimizer) -> int:
    """Training batches applied so far, counting every accumulation micro-step."""
    # Keras has no public name for the micro-step counter; it is also what a
    # checkpoint restores, so resuming from it lands on the exact batch.
    return int(optimizer._iterations.numpy())


def completes_update(optimizer: keras.optimizers.Optimizer):
    """A boolean tensor: whether the batch about to be applied ends an accumulation and updates.

    Call it before `apply_gradients`; it mirrors the test Keras itself uses.
    """
    steps = accumulation_steps(optimizer)
    return ops.equal((optimizer._iterations + 1) % steps, 0)
