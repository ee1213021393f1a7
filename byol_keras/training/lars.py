"""LARS, layer-wise adaptive rate scaling (You et al. 2017), as BYOL trains with it.

Keras 3 ships no LARS and the TF Model Garden's is Keras 2 only, so this is a
port of DeepMind's `byol/utils/optimizers.py`:

    g  ← g + weight_decay · w                       (coupled L2, not AdamW-style)
    lr ← lr · η‖w‖ / ‖g‖     (1 where either norm is 0)
    v  ← momentum · v + lr · g
    w  ← w − v

Biases and BatchNorm parameters skip both the weight decay and the trust
ratio: they take plain momentum SGD, as in the paper.
"""

from collections.abc import Sequence

import keras
from keras import ops

# Biases and BatchNorm parameters (gamma, beta), matched as parts of variable paths.
DEFAULT_EXCLUDED = ("bias", "gamma", "beta")


@keras.saving.register_keras_serializable(package="byol_keras")
class LARS(keras.optimizers.Optimizer):
    """Momentum SGD whose per-layer step is scaled by η‖w‖/‖g + λw‖.

    A variable is excluded from the weight decay and the adaptation when its
    name contains one of `exclude_from_adaptation`.

    Args:
        learning_rate: A float or a `keras.optimizers.schedules.LearningRateSchedule`.
        momentum: Momentum of the SGD update.
        weight_decay: λ, the decay added to the gradient before the update.
        trust_coefficient: η, which scales the per-layer trust ratio ‖w‖/‖g + λw‖.
        exclude_from_adaptation: Name fragments of the variables (biases,
            BatchNorm) left without weight decay and adaptation.
        name: The optimizer's name.
        **kwargs: Passed to `keras.optimizers.Optimizer`.

    ```python
    optimizer = LARS(learning_rate=4.8, weight_decay=1.5e-6, trust_coefficient=1e-3)
    model = BYOL(build_backbone("tiny", image_size=16, width=4))
    model.compile(optimizer=optimizer)
    ```
    """

    def __init__(
        self,
        learning_rate=0.1,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        trust_coefficient: float = 1e-3,
        exclude_from_adaptation: Sequence[str] = DEFAULT_EXCLUDED,
        name: str = "lars",
        **kwargs,
    ):
        # The base class's weight_decay is decoupled (AdamW style); LARS adds
        # the decay to the gradient before the trust ratio, so it stays here.
        kwargs.pop("weight_decay", None)
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"LARS momentum must be in [0, 1), got {momentum}")
        if trust_coefficient <= 0:
            raise ValueError(f"LARS trust_coefficient must be > 0, got {trust_coefficient}")
        self.momentum = momentum
        self.lars_weight_decay = weight_decay
        self.trust_coefficient = trust_coefficient
        self.exclude_from_adaptation = tuple(exclude_from_adaptation)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self._velocities = [
            self.add_variable_from_reference(variable, "velocity") for variable in variables
        ]
        self._adapted = [self.is_adapted(variable) for variable in variables]

    def is_adapted(self, variable) -> bool:
        """Whether `variable` takes weight decay and the trust ratio."""
        return not any(part in variable.name for part in self.exclude_from_adaptation)

    def update_step(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        learning_rate = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        if self._adapted[index]:
            if self.lars_weight_decay:
                gradient = gradient + self.lars_weight_decay * variable
            weight_norm = ops.sqrt(ops.sum(ops.square(variable)))
            gradient_norm = ops.sqrt(ops.sum(ops.square(gradient)))
            safe_gradient_norm = ops.where(gradient_norm > 0, gradient_norm, 1.0)
            trust_ratio = ops.where(
                ops.logical_and(weight_norm > 0, gradient_norm > 0),
                self.trust_coefficient * weight_norm / safe_gradient_norm,
                1.0,
            )
            learning_rate = learning_rate * trust_ratio
        velocity = self._velocities[index]
        self.assign(velocity, self.momentum * velocity + learning_rate * gradient)
        self.assign_sub(variable, velocity)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            momentum=self.momentum,
            weight_decay=self.lars_weight_decay,
            trust_coefficient=self.trust_coefficient,
            exclude_from_adaptation=list(self.exclude_from_adaptation),
        )
        return config
