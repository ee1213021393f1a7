"""KerasCV's RetinaNet prediction head with a chosen width and kernel initialisation.

On a CPU the two heads dominate a RetinaNet's cost: at P3 of a 256 x 320
input each 3x3 convolution of width 256 is 0.75 G multiply-adds per image,
against 0.2 G for a whole ResNet-18 of width 32. Small data sets with a few
classes (BCCD has three) do not need that width.

Kernels are N(0, 0.01) by default, as in the focal-loss paper (Lin et al.
2017, also Detectron2 and MMDetection). KerasCV's are orthogonal with gain 1:
with no normalisation in its pyramid or heads, its first logits then scale
with the backbone's features, so a backbone with larger features (a
pretrained one) starts far from the p = 0.01 prior and at a higher loss.

With `norm="group"` the head normalises what it reads (a pyramid level) and
every convolution's output with GroupNorm of up to 32 groups, as Detectron2's
RetinaNet does in its GN configurations: a backbone's feature scale then no
longer sets the scale of the head's activations.

```python
head = PredictionHead(9 * 3, keras.initializers.Zeros(), num_conv_layers=2, width=64)
head(keras.ops.zeros((1, 8, 10, 256))).shape  # (1, 8, 10, 27)
```
"""

import math

import keras
import keras_cv

# Each call gives a new initializer: one instance, reused, draws the same values every time.
KERNEL_INITIALIZERS = {
    "normal": lambda: keras.initializers.RandomNormal(stddev=0.01),
    "orthogonal": lambda: "orthogonal",
}
NORMS = ("none", "group")


@keras.saving.register_keras_serializable(package="byol_keras")
class PredictionHead(keras_cv.models.retinanet.PredictionHead):
    """A RetinaNet class or box head whose convolutions have `width` filters.

    Args:
        output_filters: Filters of the last convolution (anchors x classes, or anchors x 4).
        bias_initializer: The last convolution's bias (the focal prior for the class head).
        num_conv_layers: 3x3 convolutions (ReLU) before the last one.
        width: Their filters; KerasCV's own head uses 256.
        init: Every convolution's kernels: "normal", N(0, 0.01), or "orthogonal" (KerasCV's).
        norm: "none" (KerasCV's) or "group": GroupNorm on the input and after each convolution.
    """

    def __init__(
        self,
        output_filters: int,
        bias_initializer,
        num_conv_layers: int = 2,
        width: int = 256,
        init: str = "normal",
        norm: str = "none",
        **kwargs,
    ):
        if init not in KERNEL_INITIALIZERS:
            raise ValueError(f"init: expected normal or orthogonal, got {init!r}")
        if norm not in NORMS:
            raise ValueError(f"norm: expected none or group, got {norm!r}")
        super().__init__(output_filters, bias_initializer, num_conv_layers, **kwargs)
        self.width, self.init, self.norm = width, init, norm
        kernel = KERNEL_INITIALIZERS[init]
        # With GroupNorm the ReLU comes after the normalisation, so the convolution has none.
        activation = "relu" if norm == "none" else None
        # KerasCV builds its convolutions at 256 filters; these replace them before any is built.
        self.conv_layers = [
            keras.layers.Conv2D(
                width, 3, padding="same", kernel_initializer=kernel(), activation=activation
            )
            for _ in range(num_conv_layers)
        ]
        self.norm_layers = []
        if norm == "group":
            self.norm_layers = [
                keras.layers.GroupNormalization(math.gcd(32, width), epsilon=1e-5)
                for _ in range(num_conv_layers)
            ]
            self.input_norm = None  # its groups depend on the pyramid's width: built in build()
        if init != "orthogonal":  # KerasCV's own is; left alone, "orthogonal" draws as it did
            self.prediction_layer.kernel_initializer = keras.initializers.get(kernel())

    def build(self, input_shape):
        shape = tuple(input_shape)
        if self.norm == "group":
            self.input_norm = keras.layers.GroupNormalization(math.gcd(32, shape[-1]), epsilon=1e-5)
            self.input_norm.build(shape)
        for index, layer in enumerate(self.conv_layers):
            layer.build(shape)
            shape = shape[:-1] + (self.width,)
            if self.norm_layers:
                self.norm_layers[index].build(shape)
        self.prediction_layer.build(shape)
        self.built = True

    def call(self, x, training=False):
        if self.norm == "none":
            return super().call(x, training=training)
        x = self.input_norm(x)
        for conv, norm in zip(self.conv_layers, self.norm_layers, strict=True):
            x = keras.ops.relu(norm(conv(x)))
        return self.prediction_layer(x)

    def get_config(self) -> dict:
        return {**super().get_config(), "width": self.width, "init": self.init, "norm": self.norm}
