"""The target network: an independent copy, with equal weights, of any Keras model.

`frozen_copy` clones functional and Sequential models layer by layer
(`keras.models.clone_model`) and re-creates other models from their config;
a subclassed model whose config Keras cannot generate becomes a
`SharedCodeCopy`, which runs the model's own `call` on separate variables.

```python
backbone = build_backbone("tiny", image_size=32, width=4)
target = frozen_copy(backbone, "target_backbone", image_shape=(32, 32, 3))
for online, copy in variable_pairs(backbone, target):
    copy.assign(0.99 * copy + 0.01 * online)
```
"""

import keras


def frozen_copy(network: keras.Model, name: str, image_shape: tuple | None = None):
    """A copy of `network` with equal weights whose variables the optimizer never sees.

    Functional and Sequential networks are cloned layer by layer, other
    models re-created from their config; a subclassed model that has no
    config is wrapped in `SharedCodeCopy`. The layers stay trainable so that
    BatchNorm uses batch statistics in training mode, as the target network
    does in the paper; only the variables are marked non-trainable, which
    keeps them out of `trainable_variables` and so out of the tape and the
    optimizer.
    """
    try:
        # Sequential and functional models are cloned layer by layer; other
        # models are serialised and re-created, which needs their get_config.
        copy = keras.models.clone_model(network)
    except NotImplementedError:  # Keras could not generate get_config
        return SharedCodeCopy(network, name=name)
    if not copy.built:  # re-created subclassed or Input-less Sequential models
        copy(keras.KerasTensor((None, *image_shape)))
    copy.name = name
    copy.set_weights(network.get_weights())
    for variable in copy.weights:
        variable.trainable = False
    return copy


def variable_pairs(network: keras.Model, copy) -> list:
    """(variable of `network`, its counterpart in `copy`) for every weight."""
    if isinstance(copy, SharedCodeCopy):
        return copy.variable_pairs()
    return list(zip(network.weights, copy.weights, strict=True))


class SharedCodeCopy(keras.layers.Layer):
    """Runs `network`'s `call` on its own copy of `network`'s variables.

    The target network for a model that Keras can neither clone nor re-create
    from a config: the same code, independent variables with equal initial
    values, through Keras's `stateless_call`. BatchNorm moving statistics
    computed in training mode are written back to the copy's variables.

    ```python
    backbone = build_backbone("tiny", image_size=16, width=4)
    target = SharedCodeCopy(backbone, name="target_backbone")
    images = np.random.default_rng(0).random([2, 16, 16, 3]).astype("float32")
    features = target(images)  # equal to backbone(images) until either changes
    assert np.allclose(features, backbone(images))
    ```
    """

    def __init__(self, network: keras.Model, **kwargs):
        super().__init__(**kwargs)
        # A lambda rather than an attribute: tracking `network` here would add
        # its variables to this layer's weights.
        self._network = lambda: network
        self._trainable = [self._copy(v) for v in network.trainable_variables]
        self._non_trainable = [self._copy(v) for v in network.non_trainable_variables]
        self.built = True

    def _copy(self, variable):
        copy = self.add_weight(
            shape=variable.shape,
            dtype=variable.dtype,
            initializer="zeros",
            trainable=False,
            name=variable.name,
        )
        copy.assign(variable)
        return copy

    def variable_pairs(self) -> list:
        network = self._network()
        pairs = zip(
            network.trainable_variables + network.non_trainable_variables,
            self._trainable + self._non_trainable,
            strict=True,
        )
        weights = {id(w) for w in network.weights}
        return [(online, copy) for online, copy in pairs if id(online) in weights]

    def call(self, inputs, training: bool = False):
        outputs, non_trainable = self._network().stateless_call(
            list(self._trainable),
            list(self._non_trainable),
            inputs,
            training=training,
        )
        for variable, value in zip(self._non_trainable, non_trainable, strict=True):
            variable.assign(value)
        return outputs
