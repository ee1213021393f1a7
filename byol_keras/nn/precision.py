"""Float32 copies of networks trained in mixed precision, for evaluation and deployment."""

import keras


def float32_copy(model: keras.Model) -> keras.Model:
    """The same network with every layer computing in float32, and equal weights.

    Mixed-precision runs (`train.precision: mixed_bfloat16`) save layers that
    compute in bfloat16 or float16, which onnxruntime's CPU kernels reject and
    serving clients do not expect; deployed artifacts compute in float32.

    ```python
    exportable = float32_copy(load_model("runs/quickstart/backbone.keras"))
    ```
    """

    def clone(layer):
        if isinstance(layer, keras.Model):
            return keras.models.clone_model(layer, clone_function=clone)
        config = layer.get_config()
        if "dtype" in config:  # plain operations such as keras.ops.add carry no dtype
            config["dtype"] = "float32"
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


def compute_dtypes(model: keras.Model) -> set[str]:
    """The compute dtypes of all layers of `model`, nested models included."""
    dtypes = set()
    for layer in model.layers:
        dtypes.add(layer.compute_dtype)
        if isinstance(layer, keras.Model):
            dtypes |= compute_dtypes(layer)
    return dtypes
