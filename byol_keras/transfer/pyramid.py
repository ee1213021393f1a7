"""Multi-scale feature maps of a backbone, for dense tasks such as semantic segmentation.

`feature_pyramid(backbone)` finds, in any functional backbone (the ResNets and
tiny CNN of `backbones.py`, a `keras.applications` model nested inside one, or
a run's reloaded `backbone.keras`), the deepest feature map at each spatial
resolution, and returns a `keras.Model` from images to the coarsest
`levels` of them. The model calls the backbone's own layers, so its weights
are the backbone's variables, not copies: training the pyramid trains the
backbone.

```python
pyramid = feature_pyramid(build_backbone("resnet18", 96))  # or a run's backbone.keras
maps = pyramid(np.zeros([2, 96, 96, 3], "float32"))  # {"stride_4": [b, h/4, w/4, c4], ...}
assert maps["stride_4"].shape[:3] == (2, 24, 24) and maps["stride_32"].shape[:3] == (2, 3, 3)
```
"""

import keras

from byol_keras.errors import UsageError
from byol_keras.nn.backbones import input_image_shape


def feature_pyramid(
    backbone: keras.Model, input_shape: tuple | None = None, levels: int = 4
) -> keras.Model:
    """A model from images to the backbone's multi-scale feature maps, sharing its weights.

    A level is the last (deepest) rank-4 tensor at each spatial resolution on
    the way from the input to the pooled features; the coarsest `levels`
    resolutions are kept and named by their stride, `stride_<s>`, with `s`
    the input height divided by the map's. ResNets with the ImageNet stem give
    strides 4/8/16/32; with the CIFAR stem (below 96 px) and `tiny`, 1/2/4/8.
    A level must lie on every path from the input to the output, which leaves
    out the branches of a block, such as the vectors of squeeze-and-excitation
    blocks (global pooling kept as 1x1 maps). A stage output that is 1x1
    because the image is small (stride 32 of a 32 px image) is a level.

    Args:
        backbone: A functional `keras.Model` from images to pooled features.
        input_shape: The pyramid's image shape, e.g. `(None, None, 3)` for any
            size; default: the backbone's own input shape.
        levels: How many resolutions to keep, coarsest first.

    Returns:
        A `keras.Model` from images (as the backbone takes them, float in
        [0, 1]) to a dict `{"stride_<s>": [batch, h / s, w / s, channels]}`.

    ```python
    pyramid = feature_pyramid(build_backbone("resnet18", 128), input_shape=(None, None, 3))
    assert sorted(pyramid.output) == ['stride_16', 'stride_32', 'stride_4', 'stride_8']
    ```
    """
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 1:
        raise UsageError(f"feature_pyramid: levels must be a positive integer, got {levels!r}")
    if not hasattr(backbone, "_nodes_by_depth"):
        raise UsageError(
            f"feature_pyramid: backbone {backbone.name!r} is not a functional keras.Model; "
            "its intermediate feature maps cannot be reached"
        )
    image_shape = input_image_shape(backbone)
    images = keras.Input(shape=tuple(input_shape or image_shape), name="images")
    graph = _Graph()
    outputs = _retrace(backbone, [images], {}, graph)
    levels_found = graph.levels(image_shape[:2], images, outputs)
    if not levels_found:
        raise UsageError(
            f"feature_pyramid: backbone {backbone.name!r} has no feature map on every path "
            "from its input to its output at a stride of 2, 4, 8, ..."
        )
    chosen = sorted(levels_found.items())[-levels:]
    return keras.Model(
        images, {f"stride_{s}": tensor for s, tensor in chosen}, name=f"{backbone.name}_pyramid"
    )


class _Graph:
    """The tensors of the retraced backbone: their parents and their size in the original graph."""

    def __init__(self):
        self.order = []  # new tensors, in topological order
        self.parents = {}  # id(new tensor) -> ids of the new tensors it was computed from
        self.shapes = {}  # id(new tensor) -> spatial shape in the backbone's own graph

    def add(self, tensor, parents: list, original_shape: tuple) -> None:
        self.order.append(tensor)
        self.parents[id(tensor)] = [id(parent) for parent in parents]
        if len(original_shape) == 4:
            self.shapes[id(tensor)] = tuple(original_shape[1:3])

    def levels(self, image_size: tuple, images, outputs: list) -> dict:
        """Stride -> the deepest rank-4 tensor at that stride that every path passes through.

        Every path from input to output passes through `t` exactly when
        paths(input -> t) x paths(t -> output) = paths(input -> output); Python
        integers count them exactly. That leaves out the branches of a block
        (its first convolution, a shortcut, a squeeze-and-excitation vector)
        and keeps block and stage outputs.
        """
        into = {id(images): 1}
        for tensor in self.order:
            into[id(tensor)] = sum(into.get(parent, 0) for parent in self.parents[id(tensor)])
        out = {id(t): 1 for t in outputs}
        for tensor in reversed(self.order):
            for parent in self.parents[id(tensor)]:
                out[parent] = out.get(parent, 0) + out.get(id(tensor), 0)
        total = sum(into.get(id(t), 0) for t in outputs)
        found = {}
        for tensor in self.order:
            key = id(tensor)
            stride = _stride(image_size, self.shapes.get(key))
            if stride and into.get(key, 0) * out.get(key, 0) == total:
                found[stride] = tensor  # later in topological order: deeper
        return found


def _stride(image_size: tuple, shape: tuple | None) -> int | None:
    """The power of two `s` for which `shape` is `ceil(image_size / s)`, else None.

    Padded maps between strides (7x7 from a 64 px image) are not levels.
    """
    if shape is None or None in image_size or None in shape:
        return None
    stride = 1
    while stride <= max(image_size):
        if all(-(-side // stride) == got for side, got in zip(image_size, shape, strict=True)):
            return stride
        stride *= 2
    return None


def _retrace(model: keras.Model, inputs: list, traced: dict, graph: _Graph) -> list:
    """Calls `model`'s layers again on `inputs`, opening nested functional models.

    `traced` maps ids of the tensors of `model`'s graph to the new tensors.
    The same layer objects are called, so the new graph shares their
    variables; its input shape may differ from the original one, which a
    call of the (shape-checked) functional model itself would refuse.
    Returns the new outputs of `model`.
    """
    for original, new in zip(model.inputs, inputs, strict=True):
        traced[id(original)] = new
    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            if node.is_input:
                continue
            args, kwargs = node.arguments.fill_in(traced)
            layer = node.operation
            if hasattr(layer, "_nodes_by_depth"):  # a nested functional model
                outputs = _retrace(layer, keras.tree.flatten(args), traced, graph)
            else:
                outputs = keras.tree.flatten(layer(*args, **kwargs))
                parents = [traced[id(t)] for t in node.arguments.keras_tensors]
                for original, new in zip(node.outputs, outputs, strict=True):
                    graph.add(new, parents, original.shape)
            for original, new in zip(node.outputs, outputs, strict=True):
                traced[id(original)] = new
    return [traced[id(t)] for t in model.outputs]
