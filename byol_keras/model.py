"""The BYOL model: online and target networks trained through `model.fit`."""

from collections.abc import Sequence

import keras
import tensorflow as tf
from keras import ops

from byol_keras.backbones import feature_size, input_image_shape
from byol_keras.errors import UsageError
from byol_keras.heads import mlp_head
from byol_keras.losses import collapse_indicator, nt_xent_loss, symmetric_byol_loss
from byol_keras.methods import TAU_SCHEDULES, get_method
from byol_keras.target import frozen_copy, variable_pairs
from byol_keras.training.distribute import MultiWorkerWorkarounds
from byol_keras.training.schedules import cosine_tau
from byol_keras.training.steps import accumulation_steps, completes_update


@keras.saving.register_keras_serializable(package="byol_keras")
class BYOL(MultiWorkerWorkarounds, keras.Model):
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

    The same trainer runs BYOL's ablations and two other methods, chosen by
    `method` (see `byol_keras.methods`): `"simsiam"` regresses onto the
    online projections with stop-gradient, and `"simclr"` uses the NT-Xent
    loss between the two views; neither has a target network nor pays for
    an EMA. `use_predictor=False` drops the predictor, and
    `tau_schedule="constant"` keeps τ at `tau_base` for the whole run (0:
    the target takes the online weights after every update, a stop-gradient
    copy of the online network; 1: it stays at its initialisation). The
    collapse indicator is logged for every method.

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

    ```python
    model = BYOL(build_backbone("resnet18", image_size=32))
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(pair_dataset(source, make_augmenter("cifar"), 256), epochs=10,
              steps_per_epoch=195)
    features = model.online_backbone(images)
    simclr = BYOL(build_backbone("resnet18", image_size=32), method="simclr")
    ```
    """

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
        method: str = "byol",
        use_predictor: bool | None = None,
        tau_schedule: str = "cosine",
        temperature: float = 0.2,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not 0.0 <= tau_base <= 1.0:
            raise UsageError(f"model.tau_base: must lie in [0, 1], got {tau_base}")
        if tau_schedule not in TAU_SCHEDULES:
            choices = ", ".join(TAU_SCHEDULES)
            raise UsageError(f"model.tau_schedule: must be one of {choices}; got {tau_schedule!r}")
        if not temperature > 0.0:
            raise UsageError(f"model.temperature: must be > 0, got {temperature}")
        self.method = get_method(method)
        self.use_predictor = self.method.predictor if use_predictor is None else bool(use_predictor)
        self.tau_schedule = tau_schedule
        self.temperature = float(temperature)
        self.projection_dim = projection_dim
        self.projector_hidden_dim = projector_hidden_dim
        self.predictor_hidden_dim = predictor_hidden_dim
        self.tau_base = tau_base
        # Kept as given, so that a reloaded model decides again where it is built.
        self.sync_batchnorm = sync_batchnorm
        if sync_batchnorm is None:
            sync_batchnorm = tf.distribute.get_strategy().num_replicas_in_sync > 1
        self.augmenter = augmenter
        self.backbone_input_shape = input_image_shape(backbone, input_shape)

        feature_dim = feature_size(backbone, self.backbone_input_shape)
        self.online_backbone = backbone
        self.online_projector = mlp_head(
            feature_dim, projector_hidden_dim, projection_dim, "projector", sync_batchnorm
        )
        self.predictor = (
            mlp_head(
                projection_dim, predictor_hidden_dim, projection_dim, "predictor", sync_batchnorm
            )
            if self.use_predictor
            else None
        )
        # Only BYOL keeps a target network; the other methods hold no copy and pay no EMA.
        self.target_backbone = self.target_projector = None
        self._ema_pairs = []
        if self.method.targets == "ema":
            self.target_backbone = frozen_copy(
                backbone, "target_backbone", self.backbone_input_shape
            )
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
        self.total_steps = self.add_weight(
            shape=(), initializer="zeros", dtype="int64", trainable=False, name="total_steps"
        )
        if total_steps is not None:
            self.total_steps.assign(int(total_steps))
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.collapse_tracker = keras.metrics.Mean(name="collapse")
        # τ is a setting of the step, like a learning rate: report its current value.
        self.tau_tracker = LatestValue(name="tau")
        self.built = True  # every sub-model was built above

    @property
    def metrics(self) -> list:
        trackers = [self.loss_tracker, self.collapse_tracker]
        return trackers + [self.tau_tracker] if self.target_backbone is not None else trackers

    def call(self, images, training: bool = False):
        """Embeds `images` with the online backbone (what evaluation and export use)."""
        return self.online_backbone(images, training=training)

    def current_tau(self):
        """τ for the optimizer step about to be taken."""
        if self.tau_schedule == "constant":
            return ops.convert_to_tensor(self.tau_base, dtype="float32")
        return cosine_tau(self.optimizer.iterations, self.total_steps, self.tau_base)

    def _views(self, data):
        first, second, _ = keras.utils.unpack_x_y_sample_weight(data)
        if self.augmenter is not None:
            return self.augmenter(first, training=True)
        if second is None:
            raise ValueError(
                "BYOL.fit expects batches of (view1, view2); pass augmenter= to feed raw images"
            )
        return first, second

    def _online_predictions(self, view, training: bool):
        """The online projection of `view` and what the loss compares: the prediction, if any."""
        projection = self.online_projector(
            self.online_backbone(view, training=training), training=training
        )
        if self.predictor is None:
            return projection, projection
        return projection, self.predictor(projection, training=training)

    def _target_projection(self, view, training: bool):
        features = self.target_backbone(view, training=training)
        return ops.stop_gradient(self.target_projector(features, training=training))

    def _target_pair(self, view1, view2, training: bool):
        """The EMA target network's projections of both views; None for the other methods."""
        if self.method.targets != "ema":
            return None
        return self._target_projection(view1, training), self._target_projection(view2, training)

    def _loss_and_projection(self, view1, view2, training: bool, targets=None):
        """The method's loss and the online projection of view 1 (for the collapse indicator).

        `targets` are the EMA target's projections when the caller computed
        them already (outside the gradient tape).
        """
        z1, out1 = self._online_predictions(view1, training)
        z2, out2 = self._online_predictions(view2, training)
        if self.method.loss == "nt_xent":
            return nt_xent_loss(out1, out2, self.temperature), z1
        if self.method.targets == "online":
            targets = (ops.stop_gradient(z1), ops.stop_gradient(z2))
        elif targets is None:
            targets = self._target_pair(view1, view2, training)
        return symmetric_byol_loss(out1, out2, *targets), z1

    def train_step(self, data):
        view1, view2 = self._views(data)
        targets = self._target_pair(view1, view2, training=True)
        online_variables = self.trainable_variables
        with tf.GradientTape() as tape:
            loss, z1 = self._loss_and_projection(view1, view2, training=True, targets=targets)
            # Gradients are summed across replicas, so each replica's share
            # of the global-batch mean is loss / replicas.
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            scaled_loss = self.optimizer.scale_loss(loss / replicas)
        gradients = tape.gradient(scaled_loss, online_variables)
        tau = self.current_tau()
        updates = completes_update(self.optimizer)
        self.optimizer.apply_gradients(zip(gradients, online_variables, strict=True))
        if self.target_backbone is not None:
            if accumulation_steps(self.optimizer) > 1:
                # The online weights only move on the batch that ends an
                # accumulation, and the target follows only those moves.
                ops.cond(updates, lambda: self._update_target(tau), lambda: None)
            else:
                self._update_target(tau)
            self.tau_tracker.update_state(tau)
        self.loss_tracker.update_state(loss)
        self.collapse_tracker.update_state(collapse_indicator(z1))
        return {m.name: m.result() for m in self.metrics}

    def _update_target(self, tau) -> None:
        for online, target in self._ema_pairs:
            weight = ops.cast(tau, target.dtype)
            target.assign(weight * target + (1.0 - weight) * online)

    def test_step(self, data):
        view1, view2 = self._views(data)
        loss, z1 = self._loss_and_projection(view1, view2, training=False)
        self.loss_tracker.update_state(loss)
        self.collapse_tracker.update_state(collapse_indicator(z1))
        return {m.name: m.result() for m in self.metrics if m is not self.tau_tracker}

    def fit(self, *args, **kwargs):
        """`keras.Model.fit`, which also sets the τ schedule's length when it was not given."""
        callbacks = list(kwargs.pop("callbacks", None) or [])
        callbacks.insert(0, _TotalStepsFromFit())
        return super().fit(*args, callbacks=callbacks, **kwargs)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            backbone=keras.saving.serialize_keras_object(self.online_backbone),
            projection_dim=self.projection_dim,
            projector_hidden_dim=self.projector_hidden_dim,
            predictor_hidden_dim=self.predictor_hidden_dim,
            tau_base=self.tau_base,
            augmenter=keras.saving.serialize_keras_object(self.augmenter)
            if self.augmenter is not None
            else None,
            sync_batchnorm=self.sync_batchnorm,
            input_shape=list(self.backbone_input_shape),
            method=self.method.name,
            use_predictor=self.use_predictor,
            tau_schedule=self.tau_schedule,
            temperature=self.temperature,
        )
        return config

    @classmethod
    def from_config(cls, config: dict) -> "BYOL":
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        if config.get("augmenter") is not None:
            config["augmenter"] = keras.saving.deserialize_keras_object(config["augmenter"])
        return cls(**config)


class LatestValue(keras.metrics.Metric):
    """A metric whose result is the value of its latest update, not a mean.

    For a setting that changes every step, such as BYOL's τ, the epoch
    logs, the progress bar and `History` then show the value in use, as
    Keras shows a learning rate.

    ```python
    tau = LatestValue(name="tau")
    tau.update_state(0.99)
    tau.update_state(0.995)
    float(tau.result())  # 0.995
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


class _TotalStepsFromFit(keras.callbacks.Callback):
    """Sets `total_steps` to epochs × steps when the user did not set it."""

    def on_train_begin(self, logs=None) -> None:
        if int(self.model.total_steps.numpy()) > 0:
            return
        steps, epochs = self.params.get("steps"), self.params.get("epochs")
        if not steps:
            raise UsageError(
                "BYOL needs the schedule length: pass steps_per_epoch to fit or total_steps to BYOL"
            )
        # τ runs over optimizer updates, which accumulation makes fewer than batches.
        updates = int(steps) * int(epochs) // accumulation_steps(self.model.optimizer)
        self.model.total_steps.assign(max(updates, 1))
