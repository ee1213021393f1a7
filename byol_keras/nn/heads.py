"""The projector and predictor heads: Dense → BatchNorm → ReLU → Dense."""

import keras

from byol_keras.nn import batchnorm


def mlp_head(
    input_dim: int,
    hidden_dim: int = 4096,
    output_dim: int = 256,
    name: str = "projector",
    sync_batchnorm: bool = False,
) -> keras.Model:
    """Builds BYOL's two-layer MLP head as a functional `keras.Model`.

    The same shape serves as projector (backbone features → z) and predictor
    (z → q). The output layer has no BatchNorm, as in the paper.
    `sync_batchnorm` makes the statistics span all replicas under
    `tf.distribute`, as the paper's large-batch runs do.

    Args:
        input_dim: Size of the input features.
        hidden_dim: Units of the hidden layer.
        output_dim: Units of the output.
        name: The model's name (`"projector"` or `"predictor"`).
        sync_batchnorm: Whether the hidden BatchNorm spans all replicas.

    Returns:
        A `keras.Model` from `[batch, input_dim]` to `[batch, output_dim]`.

    ```python
    projector = mlp_head(input_dim=512, hidden_dim=4096, output_dim=256)
    z = projector(np.zeros([2, 512], "float32"))
    assert z.shape == (2, 256)
    ```
    """
    inputs = keras.Input(shape=(input_dim,), name=f"{name}_input")
    x = keras.layers.Dense(hidden_dim, name=f"{name}_dense1")(inputs)
    x = batchnorm.BatchNormalization(synchronized=sync_batchnorm, name=f"{name}_bn")(x)
    x = keras.layers.ReLU(name=f"{name}_relu")(x)
    outputs = keras.layers.Dense(output_dim, name=f"{name}_dense2")(x)
    return keras.Model(inputs, outputs, name=name)
