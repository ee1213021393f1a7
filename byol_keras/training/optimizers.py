"""Builds the optimizer and its warm-up + cosine schedule from the config."""

import keras

from byol_keras.config import OptimizerConfig
from byol_keras.training.lars import DEFAULT_EXCLUDED, LARS
from byol_keras.training.schedules import PerUpdateSchedule, WarmupCosine

# Biases and BatchNorm parameters get no weight decay (and, under LARS, no
# trust-ratio scaling), as in the paper: one list, LARS's default.
NO_DECAY_NAME_PARTS = DEFAULT_EXCLUDED


def peak_learning_rate(config: OptimizerConfig, batch_size: int) -> float:
    """`base_lr × batch_size / 256` with linear scaling, else `base_lr`.

    ```python
    assert peak_learning_rate(OptimizerConfig(base_lr=0.2), batch_size=4096) == 3.2
    ```
    """
    if config.lr_scaling == "linear":
        return config.base_lr * batch_size / 256
    return config.base_lr


def build_schedule(
    config: OptimizerConfig,
    batch_size: int,
    total_steps: int,
    steps_per_epoch: int,
    accumulation_steps: int = 1,
) -> keras.optimizers.schedules.LearningRateSchedule:
    """The warm-up cosine learning rate over `total_steps` updates (see `build_optimizer`).

    ```python
    config = load_config("configs/quickstart.yaml")
    schedule = build_schedule(config.optimizer, 256, total_steps=10_000, steps_per_epoch=195)
    ```
    """
    schedule = WarmupCosine(
        peak_lr=peak_learning_rate(config, batch_size * accumulation_steps),
        total_steps=total_steps,
        warmup_steps=min(int(config.warmup_epochs * steps_per_epoch), total_steps),
    )
    if accumulation_steps > 1:
        # Keras evaluates schedules in batches, ours are written in updates.
        schedule = PerUpdateSchedule(schedule, accumulation_steps)
    return schedule


def build_optimizer(
    config: OptimizerConfig,
    batch_size: int,
    total_steps: int,
    steps_per_epoch: int,
    accumulation_steps: int = 1,
) -> keras.optimizers.Optimizer:
    """Creates the configured optimizer with its learning-rate schedule.

    `total_steps` and `steps_per_epoch` count optimizer updates, so with
    gradient accumulation they are already divided by the accumulation steps.

    ```python
    config = load_config("configs/quickstart.yaml")
    optimizer = build_optimizer(config.optimizer, 256, total_steps=10_000, steps_per_epoch=195)
    ```
    """
    schedule = build_schedule(config, batch_size, total_steps, steps_per_epoch, accumulation_steps)
    extra = {}
    if accumulation_steps > 1:
        extra["gradient_accumulation_steps"] = accumulation_steps
    if config.name == "lars":
        return LARS(
            learning_rate=schedule,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
            trust_coefficient=config.trust_coefficient,
            exclude_from_adaptation=NO_DECAY_NAME_PARTS,
            **extra,
        )
    if config.name == "sgd":
        optimizer = keras.optimizers.SGD(
            learning_rate=schedule,
            momentum=config.momentum,
            weight_decay=config.weight_decay or None,
            **extra,
        )
    elif config.name == "adamw":
        optimizer = keras.optimizers.AdamW(
            learning_rate=schedule, weight_decay=config.weight_decay, **extra
        )
    else:
        optimizer = keras.optimizers.Adam(learning_rate=schedule, **extra)
    if config.weight_decay and config.name != "adam":
        optimizer.exclude_from_weight_decay(var_names=list(NO_DECAY_NAME_PARTS))
    return optimizer
