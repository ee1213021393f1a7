"""The learning-rate schedules: the warm-up + cosine one, and its reading in optimizer updates."""

import math

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="byol_keras")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up to `peak_lr`, then cosine decay to `final_lr`.

    BYOL's schedule: `peak_lr` is usually `base_lr * batch_size / 256`.
    After the warm-up it is Keras's `CosineDecay` with `alpha = final_lr / peak_lr`;
    the warm-up is not: Keras's starts at 0 (`peak_lr * k / warmup_steps`), so its
    first update does not move, while this one's is `peak_lr * (k + 1) / warmup_steps`:
    kept, so that a resumed run goes on along the curve it started on.

    Args:
        peak_lr: The learning rate at the end of the warm-up.
        total_steps: Steps of the whole schedule, warm-up included.
        warmup_steps: Steps of the linear warm-up from 0.
        final_lr: The learning rate at `total_steps` and after.

    ```python
    schedule = WarmupCosine(peak_lr=0.4, total_steps=10_000, warmup_steps=500)
    optimizer = keras.optimizers.SGD(learning_rate=schedule)
    ```
    """

    def __init__(
        self, peak_lr: float, total_steps: int, warmup_steps: int = 0, final_lr: float = 0.0
    ):
        self.peak_lr = float(peak_lr)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.final_lr = float(final_lr)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warmup = ops.maximum(float(self.warmup_steps), 1.0)
        warm_lr = self.peak_lr * ops.minimum((step + 1.0) / warmup, 1.0)
        decay_steps = max(self.total_steps - self.warmup_steps, 1)
        progress = ops.clip((step - self.warmup_steps) / decay_steps, 0.0, 1.0)
        cosine = self.final_lr + (self.peak_lr - self.final_lr) * 0.5 * (
            1.0 + ops.cos(math.pi * progress)
        )
        if self.warmup_steps == 0:
            return cosine
        return ops.where(step < self.warmup_steps, warm_lr, cosine)

    def get_config(self) -> dict:
        return {
            "peak_lr": self.peak_lr,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "final_lr": self.final_lr,
        }


@keras.saving.register_keras_serializable(package="byol_keras")
class PerUpdateSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Evaluates `schedule` in optimizer updates when the optimizer accumulates gradients.

    Keras 3 calls a schedule with its micro-step counter (one per batch), so
    with `gradient_accumulation_steps=k` a schedule written in updates would
    run k times too fast; this divides the count by k first.

    ```python
    schedule = WarmupCosine(peak_lr=0.4, total_steps=10_000, warmup_steps=500)
    optimizer = keras.optimizers.SGD(PerUpdateSchedule(schedule, 4), gradient_accumulation_steps=4)
    ```
    """

    def __init__(self, schedule: keras.optimizers.schedules.LearningRateSchedule, steps: int):
        self.schedule = schedule
        self.steps = int(steps)

    def __call__(self, step):
        return self.schedule(ops.floor_divide(step, self.steps))

    def get_config(self) -> dict:
        return {"schedule": keras.saving.serialize_keras_object(self.schedule), "steps": self.steps}

    @classmethod
    def from_config(cls, config: dict) -> "PerUpdateSchedule":
        config = dict(config)
        config["schedule"] = keras.saving.deserialize_keras_object(config["schedule"])
        return cls(**config)
