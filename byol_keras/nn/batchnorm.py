"""A BatchNormalization layer that trains with TensorFlow's fused kernel.

Keras 3's `BatchNormalization` computes training statistics and normalises
with separate TensorFlow ops (moments, then `tf.nn.batch_normalization`, and
the same again backwards). TensorFlow's `FusedBatchNormV3` does the forward and
its gradient in one oneDNN kernel each, which is what tf.keras 2 used. This
layer is Keras's, with the same variables, `get_config` and inference path; in
training it calls the fused kernel when the case is the plain one (TensorFlow
backend, float32 variables, NHWC or `[batch, features]` input, no mask, no
renorm, statistics of the local batch) and Keras's own code otherwise.

The class keeps Keras's name, `BatchNormalization`, because Keras names a
layer's weights in `.keras` and `.weights.h5` files after its class: files
saved with Keras's layer load into this one and back.

One difference beyond rounding: TensorFlow's graph optimiser fuses the kernel
with a ReLU after it, and with oneDNN that fused kernel turns NaN into 0 (as
measured: benchmarks/RESULTS.md, "Training speed"). A batch of NaN images can
then give a finite loss, but not finite moving statistics: the methods' step
logs the loss as NaN when they are not (`SelfSupervisedModel.track`), so the
loss guard stops at that step on every kernel.
"""

from collections.abc import Iterator

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="byol_keras")
class BatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` whose training step runs one fused TensorFlow kernel.

    The maths is Keras's: the batch's biased variance normalises, the moving
    statistics follow `momentum` the same way, and inference, synchronized
    statistics, masks and renorm go through Keras's code. `fused=False` (read
    at call time, like `synchronized`) runs Keras's ops instead.

    Args:
        fused: Whether training calls the fused kernel where it can.
        **kwargs: `keras.layers.BatchNormalization`'s arguments.

    ```python
    norm = BatchNormalization()
    out = norm(np.random.rand(4, 8, 8, 3).astype("float32"), training=True)
    assert out.shape == (4, 8, 8, 3)
    ```
    """

    def __init__(self, fused: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.fused = fused

    def call(self, inputs, training=None, mask=None):
        if not (training and self.trainable and self._fusable(inputs, mask)):
            return super().call(inputs, training=training, mask=mask)
        rank = len(inputs.shape)
        x = tf.cast(inputs, "float32")  # as Keras does: statistics in float32
        if rank == 2:
            x = x[:, None, None, :]
        channels = x.shape[-1]
        scale = tf.cast(self.gamma, "float32") if self.scale else tf.ones([channels])
        offset = tf.cast(self.beta, "float32") if self.center else tf.zeros([channels])
        y, mean, unbiased_variance, *_ = tf.raw_ops.FusedBatchNormV3(
            x=x,
            scale=scale,
            offset=offset,
            mean=tf.zeros([0]),
            variance=tf.zeros([0]),
            epsilon=self.epsilon,
            data_format="NHWC",
            is_training=True,
        )
        # The kernel returns the variance with Bessel's correction for the moving
        # statistics; Keras updates them with the biased one.
        count = tf.cast(tf.size(x) // channels, "float32")
        variance = unbiased_variance * tf.maximum(count - 1.0, 0.0) / count
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(
            self.moving_variance * self.momentum + variance * (1.0 - self.momentum)
        )
        if rank == 2:
            y = y[:, 0, 0, :]
        return tf.cast(y, self.compute_dtype)

    def _fusable(self, inputs, mask) -> bool:
        return (
            self.fused
            and keras.backend.backend() == "tensorflow"
            and mask is None
            # The kernel's scale, offset and statistics are float32; a float16, bfloat16
            # or float64 layer (not a mixed policy, whose variables are float32) is Keras's.
            and self.variable_dtype == "float32"
            and not self.renorm
            and not self.synchronized
            and len(inputs.shape) in (2, 4)
            and self.axis in (-1, len(inputs.shape) - 1)
        )

    def get_config(self) -> dict:
        return {**super().get_config(), "fused": self.fused}


def set_fused(model: keras.Model, fused: bool) -> keras.Model:
    """Sets `fused` on every byol-keras `BatchNormalization` in `model`, nested models included.

    Takes effect at the next trace: call it before `fit`, or before `compile`
    when the model was already trained.

    ```python
    from byol_keras.nn.backbones import build_backbone

    backbone = set_fused(build_backbone("tiny", image_size=16, width=4), fused=False)
    ```
    """
    for layer in batchnorm_layers(model):
        if isinstance(layer, BatchNormalization):
            layer.fused = fused
    return model


def batchnorm_layers(model: keras.Model) -> Iterator[keras.layers.BatchNormalization]:
    """Every Keras `BatchNormalization` in `model` (ours included), nested models included.

    ```python
    from byol_keras.nn.backbones import build_backbone

    assert len(list(batchnorm_layers(build_backbone("tiny", image_size=16, width=4)))) > 0
    ```
    """
    stack = [model]
    while stack:
        layer = stack.pop()
        if isinstance(layer, keras.layers.BatchNormalization):
            yield layer
        stack.extend(getattr(layer, "layers", []))
