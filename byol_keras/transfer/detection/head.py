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

```python
head = PredictionHead(9 * 3, keras.initializers.Zeros(), num_conv_layers=2, width=64)
head(keras.ops.zeros((1, 8, 10, 256))).shape  # (1, 8, 10, 27)
```
"""

import keras
import keras_cv

# Each call gives a new initializer: one instance, reused, draws the same values every time.
KERNEL_INITIALIZERS = {
    "normal": lambda: keras.initializers.RandomNormal(stddev=0.01),
    "orthogonal": lambda: "orthogonal",
}


@keras.saving.register_keras_serializable(package="byol_keras")
class PredictionHead(keras_cv.models.retinanet.PredictionHead):
    """A RetinaNet class or box head whose convolutions have `width` filters.

    Args:
        output_filters: Filters of the last convolution (anchors x classes, or anchors x 4).
        bias_initializer: The last convolution's bias (the focal prior for the class head).
        num_conv_layers: 3x3 convolutions (ReLU) before the last one.
        width: Their filters; KerasCV's own head uses 256.
        init: Every convolution's kernels: "normal", N(0, 0.01), or "orthogonal" (KerasCV's).
    """

    def __init__(
        self,
        output_filters: int,
        bias_initializer,
        num_conv_layers: int = 2,
        width: int = 256,
        init: str = "normal",
        **kwargs,
    ):
        if init not in KERNEL_INITIALIZERS:
            raise ValueError(f"init: expected normal or orthogonal, got {init!r}")
        super().__init__(output_filters, bias_initializer, num_conv_layers, **kwargs)
        self.width, self.init = width, init
        kernel = KERNEL_INITIALIZERS[init]
        # KerasCV builds its convolutions at 256 filters; these replace them before any is built.
        self.conv_layers = [
            keras.layers.Conv2D(
                width, 3, padding="same", kernel_initializer=kernel(), activation="relu"
            )
            for _ in range(num_conv_layers)
        ]
        if init != "orthogonal":  # KerasCV's own is; left alone, "orthogonal" draws as it did
            self.prediction_layer.kernel_initializer = keras.initializers.get(kernel())

    def build(self, input_shape):
        shape = tuple(input_shape)
        for layer in self.conv_layers:
            layer.build(shape)
            shape = shape[:-1] + (self.width,)
        self.prediction_layer.build(shape)
        self.built = True

    def get_config(self) -> dict:
        return {**super().get_config(), "width": self.width, "init": self.init}
