"""The BYOL model: online and target networks trained through `model.fit`."""

import keras
import tensorflow as tf
from keras import ops

from byol_keras.errors import UsageError
from byol_keras.heads import mlp_head
from byol_keras.losses import collapse_indicator, symmetric_byol_loss
from byol_keras.schedules import cosine_tau
from byol_keras.steps import accumulation_steps, completes_update


@keras.saving.register_keras_serializable(package="byol_keras")
class BYOL(keras.Model):
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

    ```python
    model = BYOL(build_backbone("resnet18", image_size=32))
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(pair_dataset(source, make_augmenter("cifar"), 256), epochs=10,
              steps_per_epoch=195)
    features = model.online_backbone(images)
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
        sync_batchnorm: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not 0.0 <= tau_base <= 1.0:
            raise UsageError(f"model.tau_base: must lie in [0, 1], got {tau_base}")
        self.projection_dim = projection_dim
        self.projector_hidden_dim = projector_hidden_dim
        self.predictor_hidden_dim = predictor_hidden_dim
        self.tau_base = tau_base
        self.sync_batchnorm = sync_batchnorm
        self.augmenter = augmenter

        feature_dim = backbone.output.shape[-1]
        self.online_backbone = backbone
        self.online_projector = mlp_head(
            feature_dim, projector_hidden_dim, projection_dim, "projector", sync_batchnorm
        )
        self.predictor = mlp_head(
            projection_dim, predictor_hidden_dim, projection_dim, "predictor", sync_batchnorm
        )
        self.target_backbone = _frozen_copy(backbone, "target_backbone")
        self.target_projector = _frozen_copy(self.online_projector, "target_projector")
        # Pairs (online, target) for the EMA: only what the optimizer trains.
        # BatchNorm moving statistics of the target follow its own forward
        # passes, as in DeepMind's implementation.
        self._ema_pairs = [
            (online, target)
            for net, copy in (
                (self.online_backbone, self.target_backbone),
                (self.online_projector, self.target_projector),
            )
            for online, target in zip(net.weights, copy.weights, strict=True)
            if online.trainable
        ]
        self.total_steps = self.add_weight(
            shape=(), initializer="zeros", dtype="int64", trainable=False, name="total_steps"
        )
        if total_steps is not None:
            self.total_steps.assign(int(total_steps))
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.collapse_tracker = keras.metrics.Mean(name="collapse")
        self.tau_tracker = keras.metrics.Mean(name="tau")
        self.built = True  # every sub-model is already built from its Input

    @property
    def metrics(self) -> list:
        return [self.loss_tracker, self.collapse_tracker, self.tau_tracker]

    def call(self, images, training: bool = False):
        """Embeds `images` with the online backbone (what evaluation and export use)."""
        return self.online_backbone(images, training=training)

    def current_tau(self):
        """τ for the optimizer step about to be taken."""
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
        projection = self.online_projector(
            self.online_backbone(view, training=training), training=training
        )
        return projection, self.predictor(projection, training=training)

    def _target_projection(self, view, training: bool):
        features = self.target_backbone(view, training=training)
        return ops.stop_gradient(self.target_projector(features, training=training))

    def _loss_and_projection(self, view1, view2, training: bool):
        z1, q1 = self._online_predictions(view1, training)
        _, q2 = self._online_predictions(view2, training)
        return symmetric_byol_loss(q1, q2, *self._target_pair(view1, view2, training)), z1

    def _target_pair(self, view1, view2, training: bool):
        return self._target_projection(view1, training), self._target_projection(view2, training)

    def train_step(self, data):
        view1, view2 = self._views(data)
        z1_target, z2_target = self._target_pair(view1, view2, training=True)
        online_variables = self.trainable_variables
        with tf.GradientTape() as tape:
            z1, q1 = self._online_predictions(view1, training=True)
            _, q2 = self._online_predictions(view2, training=True)
            loss = symmetric_byol_loss(q1, q2, z1_target, z2_target)
            # Gradients are summed across replicas, so each replica's share
            # of the global-batch mean is loss / replicas.
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            scaled_loss = self.optimizer.scale_loss(loss / replicas)
        gradients = tape.gradient(scaled_loss, online_variables)
        tau = self.current_tau()
        updates = completes_update(self.optimizer)
        self.optimizer.apply_gradients(zip(gradients, online_variables, strict=True))
        if accumulation_steps(self.optimizer) > 1:
            # The online weights only move on the batch that ends an
            # accumulation, and the target follows only those moves.
            ops.cond(updates, lambda: self._update_target(tau), lambda: None)
        else:
            self._update_target(tau)
        self.loss_tracker.update_state(loss)
        self.collapse_tracker.update_state(collapse_indicator(z1))
        self.tau_tracker.update_state(tau)
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

    # Two workarounds for Keras 3's TF trainer under MultiWorkerMirroredStrategy
    # (tensorflow/tensorflow#72388); both are harmless for the other strategies.

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Every sub-model is built from its Input, so only the optimizer is
        # left to build. Keras 3's own version first all-reduces a whole
        # (view1, view2) batch, which MultiWorkerMirroredStrategy rejects.
        with self.distribute_strategy.scope():
            if self.optimizer is not None and not self.optimizer.built:
                self.optimizer.build(self.trainable_variables)
            self._post_build()

    def _make_function(self, step_function):
        # Keras reduces multi-worker step outputs with MEAN over axis 0, which
        # fails for scalar metrics; as [1] vectors they average to scalars.
        strategy = self.distribute_strategy
        multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
        if not (multi_worker and strategy.extended._in_multi_worker_mode()):
            return super()._make_function(step_function)

        def vector_logs(data):
            logs = step_function(data)
            return {k: tf.reshape(v, [1]) if v.shape.rank == 0 else v for k, v in logs.items()}

        return super()._make_function(vector_logs)

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
        )
        return config

    @classmethod
    def from_config(cls, config: dict) -> "BYOL":
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        if config.get("augmenter") is not None:
            config["augmenter"] = keras.saving.deserialize_keras_object(config["augmenter"])
        return cls(**config)


def _frozen_copy(network: keras.Model, name: str) -> keras.Model:
    """Clones `network` with equal weights whose variables the optimizer never sees.

    The layers stay trainable so that BatchNorm uses batch statistics in
    training mode, as the target network does in the paper; only the
    variables are marked non-trainable, which keeps them out of
    `trainable_variables` and so out of the tape and the optimizer.
    """
    copy = keras.models.clone_model(network)
    copy.name = name
    copy.set_weights(network.get_weights())
    for variable in copy.weights:
        variable.trainable = False
    return copy


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
