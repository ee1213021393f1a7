"""KerasCV's RetinaNet prediction head with a chosen width instead of its fixed 256 filters.

On a CPU the two heads dominate a RetinaNet's cost: at P3 of a 256 x 320
input each 3x3 convolution of width 256 is 0.75 G multiply-adds per image,
against 0.2 G for a whole ResNet-18 of width 32. Small data sets with a few
classes (BCCD has three) do not need that width.

```python
head = PredictionHead(9 * 3, keras.initializers.Zeros(), num_conv_layers=2, width=64)
head(keras.ops.zeros((1, 8, 10, 256))).shape  # (1, 8, 10, 27)
```
"""

import keras
import keras_cv


@keras.saving.register_keras_serializable(package="byol_keras")
class PredictionHead(keras_cv.models.retinanet.PredictionHead):
    """A RetinaNet class or box head whose convolutions have `width` filters.

    Args:
        output_filters: Filters of the last convolution (anchors x classes, or anchors x 4).
        bias_initializer: The last convolution's bias (the focal prior for the class head).
        num_conv_layers: 3x3 convolutions (ReLU) before the last one.
        width: Their filters; KerasCV's own head uses 256.
    """

    def __init__(
        self,
        output_filters: int,
        bias_initializer,
        num_conv_layers: int = 2,
        width: int = 256,
        **kwargs,
    ):
        super().__init__(output_filters, bias_initializer, num_conv_layers, **kwargs)
        self.width = width
        # KerasCV builds its convolutions at 256 filters; these replace them before any is built.
        self.conv_layers = [
            keras.layers.Conv2D(
                width, 3, padding="same", kernel_initializer="orthogonal", activation="relu"
            )
            for _ in range(num_conv_layers)
        ]

    def build(self, input_shape):
        shape = tuple(input_shape)
        for layer in self.conv_layers:
            layer.build(shape)
            shape = shape[:-1] + (self.width,)
        self.prediction_layer.build(shape)
        self.built = True

    def get_config(self) -> dict:
        return {**super().get_config(), "width": self.width}
