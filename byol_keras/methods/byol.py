"""BYOL (Grill et al. 2020): the online network predicts an EMA target network's projection."""

import inspect
import math
from collections.abc import Sequence

import keras
import tensorflow as tf
from keras import ops

from byol_keras.catalog import TAU_SCHEDULES, method_class
from byol_keras.errors import UsageError
from byol_keras.methods.base import SelfSupervisedModel, deserialized_arguments
from byol_keras.methods.steps import accumulation_steps, completes_update
from byol_keras.nn.losses import symmetric_byol_loss
from byol_keras.nn.target import frozen_copy, variable_pairs

# What the one-class BYOL of earlier versions saved for every method; see `BYOL.from_config`.
_ONE_CLASS_KEYS = ("method", "tau_base", "tau_schedule", "temperature")


def cosine_tau(step, total_steps, tau_base: float = 0.996):
    """The paper's target momentum, `1 - (1 - tau_base) * (cos(pi k / K) + 1) / 2`.

    It starts at `tau_base` at step 0 and reaches exactly 1.0 at step K.
    Steps past K are clipped to K.

    Args:
        step: The update step `k`, a number or a tensor.
        total_steps: `K`, the number of updates of the whole training.
        tau_base: τ at step 0.

    Returns:
        τ at step `k`, a float32 scalar tensor.

    ```python
    tau = cosine_tau(step=0, total_steps=1000)  # 0.996
    assert abs(float(tau) - 0.996) < 1e-6
    ```
    """
    total = ops.maximum(ops.cast(total_steps, "float32"), 1.0)
    progress = ops.minimum(ops.cast(step, "float32"), total) / total
    return 1.0 - (1.0 - tau_base) * (ops.cos(math.pi * progress) + 1.0) / 2.0


@keras.saving.register_keras_serializable(package="byol_keras")
class BYOL(SelfSupervisedModel):
    """Bootstrap Your Own Latent (Grill et al. 2020) as a `keras.Model`.

    The online network (backbone → projector → predictor) learns to predict
    the target network's projection of another view of the same image. The
    target (backbone → projector) starts as a copy of the online network,
    gets no gradients, and after every optimizer step moves towards it:
    ξ ← τ·ξ + (1−τ)·θ, with τ on the paper's cosine schedule from `tau_base`
    to 1 over `total_steps` (by default epochs × steps of the `fit` call).

    `fit` takes batches of view pairs `(view1, view2)`, or, when an
    `augmenter` layer is given, batches of images (optionally with labels)
    that are turned into two views on the device inside `train_step`.

    The backbone can be any Keras model that maps a batch of images to
    pooled features `[batch, features]`: a functional model, a
    `keras.Sequential` (with or without `keras.Input`), a subclassed
    `keras.Model`, a `keras.applications` model with `pooling="avg"`, or a
    KerasHub backbone followed by pooling. It is trained in place:
    `model.online_backbone` is the object passed in. The target backbone is
    an independent copy with equal weights, made by `keras.models.clone_model`
    for functional and Sequential models, by `from_config(get_config())` for
    subclassed ones, and, for a subclassed model whose `get_config` Keras
    cannot generate, as a layer that runs the backbone's own `call` on its
    own copies of the variables (`stateless_call`). Saving to `.keras` needs
    a backbone class registered with
    `@keras.saving.register_keras_serializable()` and a working `get_config`.

    Two ablations: `use_predictor=False` drops the predictor, and
    `tau_schedule="constant"` keeps τ at `tau_base` for the whole run (0:
    the target takes the online weights after every update, a stop-gradient
    copy of the online network; 1: it stays at its initialisation).
    `SimSiam` and `SimCLR` are the sibling methods.

    Args:
        backbone: the `keras.Model` to pretrain.
        projection_dim: output size of the projector and predictor.
        projector_hidden_dim: hidden size of the projector.
        predictor_hidden_dim: hidden size of the predictor.
        tau_base: EMA momentum at step 0, in [0, 1].
        total_steps: length of the τ schedule in optimizer updates; `None`
            takes epochs × steps of the first `fit` call.
        augmenter: optional layer that turns an image batch into two views.
        sync_batchnorm: whether the heads' BatchNorm uses global-batch
            statistics; `None` means yes when the model is built under a
            `tf.distribute` strategy with more than one replica.
        input_shape: shape of one image, e.g. `(32, 32, 3)`, for a backbone
            that declares none (subclassed, or Sequential without `Input`).
        use_predictor: whether the online network ends in the predictor
            (`None`: yes, as in the paper).
        tau_schedule: `"cosine"` (the paper's) or `"constant"` (τ = `tau_base`).
        fused_ema: whether each target weight moves in one kernel (see
            `update_target`) rather than six element-wise ops; a speed
            option, off by default until measured.
        **kwargs: `keras.Model`'s, such as `name`.

    ```python
    # doctest: slow
    source = load_source("digits", image_size=16)
    model = BYOL(build_backbone("tiny", image_size=16, width=4))
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(pair_dataset(source, make_augmenter("digits", image_size=16), 32), epochs=1,
              steps_per_epoch=2)
    features = model.online_backbone(np.zeros([2, 16, 16, 3], "float32"))
    ```
    """

    method = "byol"

    def __init__(
        self,
        backbone: keras.Model,
        projection_dim: int = 256,
        projector_hidden_dim: int = 4096,
        predictor_hidden_dim: int = 4096,
        tau_base: float = 0.996,
        total_steps: int | None = None,
        augmenter: keras.layers.Layer | None = None,
        sync_batchnorm: bool | None = None,
        input_shape: Sequence[int | None] | None = None,
        use_predictor: bool | None = None,
        tau_schedule: str = "cosine",
        fused_ema: bool = False,
        **kwargs,
    ):
        if not 0.0 <= tau_base <= 1.0:
            raise UsageError(f"model.tau_base: must lie in [0, 1], got {tau_base}")
        if tau_schedule not in TAU_SCHEDULES:
            choices = ", ".join(TAU_SCHEDULES)
            raise UsageError(f"model.tau_schedule: must be one of {choices}; got {tau_schedule!r}")
        super().__init__(
            backbone,
            projection_dim=projection_dim,
            projector_hidden_dim=projector_hidden_dim,
            predictor_hidden_dim=predictor_hidden_dim,
            total_steps=total_steps,
            augmenter=augmenter,
            sync_batchnorm=sync_batchnorm,
            input_shape=input_shape,
            use_predictor=use_predictor,
            **kwargs,
        )
        self.tau_base = tau_base
        self.tau_schedule = tau_schedule
        self.fused_ema = fused_ema
        # τ is a setting of the step, like a learning rate: report its current value.
        self.tau_tracker = LatestValue(name="tau")

    def build_targets(self) -> None:
        """The target network: a copy of the online backbone and projector, moved by EMA."""
        backbone = self.online_backbone
        self.target_backbone = frozen_copy(backbone, "target_backbone", self.backbone_input_shape)
        self.target_projector = frozen_copy(self.online_projector, "target_projector")
        # Pairs (online, target) for the EMA: only what the optimizer trains.
        # BatchNorm moving statistics of the target follow its own forward
        # passes, as in DeepMind's implementation.
        self._ema_pairs = [
            (online, target)
            for net, copy in (
                (self.online_backbone, self.target_backbone),
                (self.online_projector, self.target_projector),
            )
            for online, target in variable_pairs(net, copy)
            if online.trainable
        ]

    @property
    def metrics(self) -> list:
        return [*super().metrics, self.tau_tracker]

    def train_step(self, data):
        view1, view2 = self.views(data)
        targets = self.target_projections(view1, view2, training=True)
        with tf.GradientTape() as tape:
            loss, z1 = self.loss_and_projection(view1, view2, training=True, targets=targets)
            scaled_loss = self.replica_share(loss)
        tau = self.current_tau()
        updates = completes_update(self.optimizer)
        self.apply_online_gradients(tape, scaled_loss)
        if accumulation_steps(self.optimizer) > 1:
            # The online weights only move on the batch that ends an
            # accumulation, and the target follows only those moves.
            ops.cond(updates, lambda: self.update_target(tau), lambda: None)
        else:
            self.update_target(tau)
        self.tau_tracker.update_state(tau)
        return self.track(loss, z1)

    def loss_and_projection(self, view1, view2, training: bool, targets=None):
        """BYOL's symmetric loss and the online projection of view 1.

        `targets` are the target network's projections of both views when
        the caller computed them already (outside the gradient tape).
        """
        z1, p1 = self.online_projection(view1, training)
        z2, p2 = self.online_projection(view2, training)
        if targets is None:
            targets = self.target_projections(view1, view2, training)
        return symmetric_byol_loss(p1, p2, *targets), z1

    def target_projections(self, view1, view2, training: bool):
        """The target network's projections of both views, without gradients."""
        return self._target_projection(view1, training), self._target_projection(view2, training)

    def _target_projection(self, view, training: bool):
        features = self.target_backbone(view, training=training)
        return ops.stop_gradient(self.target_projector(features, training=training))

    def current_tau(self):
        """τ for the optimizer step about to be taken."""
        if self.tau_schedule == "constant":
            return ops.convert_to_tensor(self.tau_base, dtype="float32")
        return cosine_tau(self.optimizer.iterations, self.total_steps, self.tau_base)

    def update_target(self, tau) -> None:
        """ξ ← τ·ξ + (1−τ)·θ for every trained weight.

        With `fused_ema` each weight takes one `ResourceApplyGradientDescent`,
        ξ ← ξ − (1−τ)·(ξ − θ), the same value up to rounding. Under a
        `tf.distribute` strategy the element-wise form runs, which Keras
        routes to every replica's copy.
        """
        if self.fused_ema and not tf.distribute.has_strategy():
            step = 1.0 - ops.cast(tau, "float32")
            for online, target in self._ema_pairs:
                # tf.cast returns a float32 step as it is: no op per weight.
                alpha = ops.cast(step, target.dtype)
                tf.raw_ops.ResourceApplyGradientDescent(
                    var=target.handle, alpha=alpha, delta=target - online
                )
            return
        for online, target in self._ema_pairs:
            weight = ops.cast(tau, target.dtype)
            target.assign(weight * target + (1.0 - weight) * online)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "tau_base": self.tau_base,
            "tau_schedule": self.tau_schedule,
            "fused_ema": self.fused_ema,
        }

    @classmethod
    def from_config(cls, config: dict) -> SelfSupervisedModel:
        """The model `config` describes; a `model.keras` of the one-class BYOL gives its method.

        Before the methods became classes, every model was saved as BYOL
        with a `method` key and every method's settings; such a file loads
        as the method's class with the settings that class takes.
        """
        model_class = method_class(config.get("method", cls.method))
        taken = inspect.signature(model_class).parameters
        kept = {k: v for k, v in config.items() if k not in _ONE_CLASS_KEYS or k in taken}
        return model_class(**deserialized_arguments(kept))


class LatestValue(keras.metrics.Metric):
    """A metric whose result is the value of its latest update, not a mean.

    For a setting that changes every step, such as BYOL's τ, the epoch
    logs, the progress bar and `History` then show the value in use, as
    Keras shows a learning rate.

    ```python
    tau = LatestValue(name="tau")
    tau.update_state(0.99)
    tau.update_state(0.995)
    assert abs(float(tau.result()) - 0.995) < 1e-6
    ```
    """

    def __init__(self, name: str = "latest_value", dtype=None):
        super().__init__(name=name, dtype=dtype)
        # Every replica updates with the same value; the mean of equal values is that value.
        self.value = self.add_variable(
            shape=(), initializer="zeros", dtype=self.dtype, aggregation="mean", name="value"
        )

    def update_state(self, value) -> None:
        self.value.assign(ops.cast(value, self.dtype))

    def result(self):
        return ops.convert_to_tensor(self.value)
