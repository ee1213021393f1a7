"""What every method shares: the online network, the views, the step, the trackers, saving.

A method subclasses `SelfSupervisedModel` and writes `loss_and_projection`;
BYOL also writes its own `train_step`, to move its target network.

```python
class Predictive(SelfSupervisedModel):
    method = "predictive"

    def loss_and_projection(self, view1, view2, training):
        z1, p1 = self.online_projection(view1, training)
        z2, p2 = self.online_projection(view2, training)
        return symmetric_byol_loss(p1, p2, ops.stop_gradient(z2), ops.stop_gradient(z1)), z1
```
"""

from collections.abc import Sequence

import keras
import tensorflow as tf

from byol_keras import onednn
from byol_keras.catalog import get_method
from byol_keras.errors import UsageError
from byol_keras.methods.multi_worker import MultiWorkerWorkarounds
from byol_keras.methods.steps import accumulation_steps
from byol_keras.nn.backbones import feature_size, input_image_shape
from byol_keras.nn.batchnorm import batchnorm_layers
from byol_keras.nn.heads import mlp_head
from byol_keras.nn.losses import collapse_indicator


class SelfSupervisedModel(MultiWorkerWorkarounds, keras.Model):
    """The shared base of `BYOL`, `SimSiam` and `SimCLR`: a two-view model trained by `fit`.

    It holds the online network (backbone → projector → optional predictor),
    turns a batch into two views, scales the loss for the replicas, applies
    the gradients (accumulated when the optimizer says so), logs the loss and
    the collapse indicator, and saves and loads the model. A subclass names
    its `method` and writes `loss_and_projection`.

    `fit` takes batches of view pairs `(view1, view2)`, or, when an
    `augmenter` layer is given, batches of images (optionally with labels)
    that are turned into two views on the device inside `train_step`.

    The backbone can be any Keras model that maps a batch of images to
    pooled features `[batch, features]` (see `BYOL`); it is trained in place:
    `model.online_backbone` is the object passed in.

    Args:
        backbone: the `keras.Model` to pretrain.
        projection_dim: output size of the projector and predictor.
        projector_hidden_dim: hidden size of the projector.
        predictor_hidden_dim: hidden size of the predictor.
        total_steps: length of the run in optimizer updates, for the
            schedules; `None` takes epochs × steps of the first `fit` call.
        augmenter: optional layer that turns an image batch into two views.
        sync_batchnorm: whether the heads' BatchNorm uses global-batch
            statistics; `None` means yes when the model is built under a
            `tf.distribute` strategy with more than one replica.
        input_shape: shape of one image, e.g. `(32, 32, 3)`, for a backbone
            that declares none (subclassed, or Sequential without `Input`).
        use_predictor: whether the online network ends in a predictor head;
            `None` takes the method's default.

    ```python
    # doctest: slow
    from byol_keras import SimSiam

    source = load_source("digits", image_size=16)
    pairs = pair_dataset(source, make_augmenter("digits", image_size=16), 32)
    model = SimSiam(build_backbone("tiny", image_size=16, width=4))
    model.compile(optimizer="sgd")
    model.fit(pairs, epochs=1, steps_per_epoch=2)
    ```
    """

    method: str  # the name `model.method` takes, set by each subclass

    def __init__(
        self,
        backbone: keras.Model,
        projection_dim: int = 256,
        projector_hidden_dim: int = 4096,
        predictor_hidden_dim: int = 4096,
        total_steps: int | None = None,
        augmenter: keras.layers.Layer | None = None,
        sync_batchnorm: bool | None = None,
        input_shape: Sequence[int | None] | None = None,
        use_predictor: bool | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        default_predictor = get_method(self.method).predictor
        self.use_predictor = default_predictor if use_predictor is None else bool(use_predictor)
        self.projection_dim = projection_dim
        self.projector_hidden_dim = projector_hidden_dim
        self.predictor_hidden_dim = predictor_hidden_dim
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
        self.build_targets()
        self.total_steps = self.add_weight(
            shape=(), initializer="zeros", dtype="int64", trainable=False, name="total_steps"
        )
        if total_steps is not None:
            self.total_steps.assign(int(total_steps))
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.collapse_tracker = keras.metrics.Mean(name="collapse")
        self.built = True  # every sub-model was built above

    def build_targets(self) -> None:
        """Creates the networks that give the method its targets, if any; none by default.

        It runs between the online network and the step counter: saved
        weights are read back in the order they were created, and this is
        the order in which the one-class BYOL of earlier versions made them.
        """

    @property
    def metrics(self) -> list:
        return [self.loss_tracker, self.collapse_tracker]

    def call(self, images, training: bool = False):
        """Embeds `images` with the online backbone (what evaluation and export use)."""
        return self.online_backbone(images, training=training)

    def views(self, data):
        """The two views of a batch: given as a pair, or made by the augmenter."""
        first, second, _ = keras.utils.unpack_x_y_sample_weight(data)
        if self.augmenter is not None:
            return self.augmenter(first, training=True)
        if second is None:
            raise ValueError(
                f"{type(self).__name__}.fit expects batches of (view1, view2); "
                "pass augmenter= to feed raw images"
            )
        return first, second

    def online_projection(self, view, training: bool):
        """The online projection of `view` and what the loss compares: the prediction, if any."""
        projection = self.online_projector(
            self.online_backbone(view, training=training), training=training
        )
        if self.predictor is None:
            return projection, projection
        return projection, self.predictor(projection, training=training)

    def loss_and_projection(self, view1, view2, training: bool):
        """The method's loss and the online projection of view 1 (for the collapse indicator)."""
        raise NotImplementedError

    def replica_share(self, loss):
        """This replica's part of the global-batch mean, scaled for the optimizer.

        Gradients are summed across replicas, so each replica contributes
        loss / replicas (and the optimizer's loss scale under mixed precision).
        """
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        return self.optimizer.scale_loss(loss / replicas)

    def apply_online_gradients(self, tape: tf.GradientTape, scaled_loss) -> None:
        """One optimizer step (or accumulation micro-step) on the online network."""
        variables = self.trainable_variables
        gradients = tape.gradient(scaled_loss, variables)
        self.optimizer.apply_gradients(zip(gradients, variables, strict=True))

    def track(self, loss, projection) -> dict:
        """Updates the loss and collapse trackers; the logs `fit` shows.

        The loss counts as NaN when the online network's BatchNorm moving
        statistics are not finite, so that `StopOnNonFiniteLoss` sees the step
        diverge whatever the kernel: with oneDNN, the BatchNorm + ReLU kernel
        that TensorFlow fuses turns NaN activations into 0 and the loss itself
        can stay finite, but the statistics of the BatchNorm the NaN reached
        do not.
        """
        self.loss_tracker.update_state(self._nan_unless_statistics_finite(loss))
        self.collapse_tracker.update_state(collapse_indicator(projection))
        return {m.name: m.result() for m in self.metrics}

    def _nan_unless_statistics_finite(self, loss):
        statistics = [
            tf.cast(variable, "float32")  # [channels]; a float32 one is read as it is
            for network in (self.online_backbone, self.online_projector, self.predictor)
            if network is not None
            for layer in batchnorm_layers(network)
            for variable in (layer.moving_mean, layer.moving_variance)
        ]
        if not statistics:
            return loss
        # One reduction over all of them: cheaper than a check per layer (RESULTS.md).
        finite = tf.reduce_all(tf.math.is_finite(tf.concat(statistics, axis=0)))
        return tf.where(finite, loss, tf.constant(float("nan"), loss.dtype))

    def train_step(self, data):
        view1, view2 = self.views(data)
        with tf.GradientTape() as tape:
            loss, z1 = self.loss_and_projection(view1, view2, training=True)
            scaled_loss = self.replica_share(loss)
        self.apply_online_gradients(tape, scaled_loss)
        return self.track(loss, z1)

    def test_step(self, data):
        view1, view2 = self.views(data)
        loss, z1 = self.loss_and_projection(view1, view2, training=False)
        logs = self.track(loss, z1)
        return {"loss": logs["loss"], "collapse": logs["collapse"]}  # no schedule values

    def fit(self, *args, **kwargs):
        """`keras.Model.fit`, which also sets `total_steps` when it was not given."""
        onednn.warn_once_if_off()
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
            augmenter=keras.saving.serialize_keras_object(self.augmenter)
            if self.augmenter is not None
            else None,
            sync_batchnorm=self.sync_batchnorm,
            input_shape=list(self.backbone_input_shape),
            use_predictor=self.use_predictor,
        )
        return config

    @classmethod
    def from_config(cls, config: dict) -> "SelfSupervisedModel":
        return cls(**deserialized_arguments(config))


def deserialized_arguments(config: dict) -> dict:
    """`config` with its backbone and augmenter turned back into layers."""
    config = dict(config)
    config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
    if config.get("augmenter") is not None:
        config["augmenter"] = keras.saving.deserialize_keras_object(config["augmenter"])
    return config


class _TotalStepsFromFit(keras.callbacks.Callback):
    """Sets `total_steps` to epochs × steps when the user did not set it."""

    def on_train_begin(self, logs=None) -> None:
        if int(self.model.total_steps.numpy()) > 0:
            return
        steps, epochs = self.params.get("steps"), self.params.get("epochs")
        if not steps:
            raise UsageError(
                f"{type(self.model).__name__} needs the schedule length: pass steps_per_epoch "
                "to fit or total_steps to the model"
            )
        # Schedules run over optimizer updates, which accumulation makes fewer than batches.
        updates = int(steps) * int(epochs) // accumulation_steps(self.model.optimizer)
        self.model.total_steps.assign(max(updates, 1))
