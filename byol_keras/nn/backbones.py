"""Backbones: ResNet-18/50 with CIFAR or ImageNet stems, keras.applications, a tiny CNN.

Every backbone takes float32 images in [0, 1] of shape (size, size, 3) and
returns pooled features of shape (features,). The ImageNet mean/std
standardisation is the backbone's first layer, so exported models need only
scale uint8 pixels to [0, 1].

`input_image_shape` and `feature_size` tell the method classes what it needs to know about
any Keras backbone, including ones built elsewhere.
"""

import keras

from byol_keras.errors import UsageError, first_line
from byol_keras.nn import batchnorm

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Below this size the 7x7/stride-2 stem and max-pool discard most of the image.
CIFAR_STEM_MAX_SIZE = 95

RESNET_LAYOUTS = {
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
}


def build_backbone(
    name: str, image_size: int, stem: str = "auto", width: int = 64, weights: str | None = None
) -> keras.Model:
    """Builds a backbone by name: `resnet18`, `resnet34`, `resnet50`, `tiny`, or a
    `keras.applications` model name such as `MobileNetV3Small`.

    `stem="auto"` picks the CIFAR stem (3x3 conv, no max-pool) below 96 px and
    the standard 7x7 stem with max-pool from 96 px up. keras.applications
    models start from random weights, or with `weights="imagenet"` from
    Keras's ImageNet weights, which are downloaded.

    Args:
        name: The backbone's name, as above.
        image_size: Side of the square input images.
        stem: `"auto"`, `"cifar"` or `"imagenet"` (ResNets only).
        width: Channels of the first stage (`resnet*`, `tiny`).
        weights: `None`, or `"imagenet"` for a `keras.applications` model.

    Returns:
        A `keras.Model` from `[batch, image_size, image_size, 3]` images in
        [0, 1] to `[batch, features]`.

    ```python
    backbone = build_backbone("resnet18", image_size=32)
    features = backbone(np.zeros([2, 32, 32, 3], "float32"))  # [batch, 512]
    assert features.shape == (2, 512)
    ```
    """
    if stem not in ("auto", "cifar", "imagenet"):
        raise UsageError(f"model.stem: expected auto, cifar or imagenet, got {stem!r}")
    if stem == "auto":
        stem = "cifar" if image_size <= CIFAR_STEM_MAX_SIZE else "imagenet"
    application = getattr(keras.applications, name, None)
    if weights is not None and (name in RESNET_LAYOUTS or not callable(application)):
        raise UsageError(
            f"model.init_weights: {weights} weights exist for keras.applications backbones "
            f"only, not {name!r}; give a .keras or .weights.h5 file instead"
        )
    if name in RESNET_LAYOUTS:
        block, depths = RESNET_LAYOUTS[name]
        return resnet(image_size, block, depths, stem=stem, width=width, name=name)
    if name == "tiny":
        return tiny_cnn(image_size, width=width)
    if application is None or not callable(application):
        raise UsageError(
            f"model.backbone: unknown backbone {name!r} (use resnet18, resnet34, "
            "resnet50, tiny, or a keras.applications model name)"
        )
    return _application_backbone(application, name, image_size, weights)


def _standardized_input(image_size: int) -> tuple:
    inputs = keras.Input(shape=(image_size, image_size, 3), name="images")
    x = keras.layers.Normalization(
        mean=IMAGENET_MEAN,
        variance=[s * s for s in IMAGENET_STD],
        name="standardize",
    )(inputs)
    return inputs, x


def _conv_bn(x, filters: int, kernel: int, stride: int, name: str, relu: bool = True):
    if kernel == 1 and stride > 1:
        # TensorFlow 2.21's oneDNN weight gradient of a strided 1x1 convolution kills the
        # process for some channel counts (3, 6, 8, 10 and 12 seen, on AMD and Intel alike:
        # benchmarks/correctness/onednn_strided_1x1_crash.py). Keeping every stride-th pixel
        # first gives the same convolution through the stride-1 kernel, which does not crash.
        x = keras.layers.MaxPooling2D(1, strides=stride, padding="same", name=f"{name}_subsample")(
            x
        )
        stride = 1
    x = keras.layers.Conv2D(
        filters, kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_conv"
    )(x)
    x = batchnorm.BatchNormalization(name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x) if relu else x


def _basic_block(x, filters: int, stride: int, name: str):
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        shortcut = _conv_bn(x, filters, 1, stride, f"{name}_proj", relu=False)
    x = _conv_bn(x, filters, 3, stride, f"{name}_a")
    x = _conv_bn(x, filters, 3, 1, f"{name}_b", relu=False)
    x = keras.layers.Add(name=f"{name}_add")([shortcut, x])
    return keras.layers.ReLU(name=f"{name}_out")(x)


def _bottleneck_block(x, filters: int, stride: int, name: str):
    out_filters = 4 * filters
    shortcut = x
    if stride != 1 or x.shape[-1] != out_filters:
        shortcut = _conv_bn(x, out_filters, 1, stride, f"{name}_proj", relu=False)
    x = _conv_bn(x, filters, 1, 1, f"{name}_a")
    x = _conv_bn(x, filters, 3, stride, f"{name}_b")
    x = _conv_bn(x, out_filters, 1, 1, f"{name}_c", relu=False)
    x = keras.layers.Add(name=f"{name}_add")([shortcut, x])
    return keras.layers.ReLU(name=f"{name}_out")(x)


def resnet(
    image_size: int,
    block: str,
    depths: tuple,
    stem: str = "cifar",
    width: int = 64,
    name: str = "resnet",
) -> keras.Model:
    """A ResNet v1 (He et al. 2016) with a CIFAR or ImageNet stem.

    Args:
        image_size: Side of the square input images.
        block: `"basic"` (ResNet-18/34) or `"bottleneck"` (ResNet-50).
        depths: The number of blocks in each of the four stages.
        stem: `"cifar"` (3x3 conv, no max-pool) or `"imagenet"` (7x7, max-pool).
        width: Channels of the first stage; each stage doubles them.
        name: The model's name.

    Returns:
        A `keras.Model` from images to globally average-pooled features.

    ```python
    backbone = resnet(32, "basic", (2, 2, 2, 2), stem="cifar")  # ResNet-18
    ```
    """
    block_fn = {"basic": _basic_block, "bottleneck": _bottleneck_block}[block]
    inputs, x = _standardized_input(image_size)
    if stem == "cifar":
        x = _conv_bn(x, width, 3, 1, "stem")
    else:
        x = _conv_bn(x, width, 7, 2, "stem")
        x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
    for stage, depth in enumerate(depths):
        for index in range(depth):
            stride = 2 if stage > 0 and index == 0 else 1
            x = block_fn(x, width * 2**stage, stride, f"stage{stage + 1}_block{index + 1}")
    outputs = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, outputs, name=name)


def tiny_cnn(image_size: int, width: int = 32) -> keras.Model:
    """A four-layer CNN: the backbone of the tests, the quickstart and the CPU recipes.

    Its feature maps have strides 1/2/4/8, so on small images it keeps a finer
    pyramid than a ResNet with the ImageNet stem (4/8/16/32) at a similar
    cost; that is why `configs/camvid_tiny_cpu.yaml` uses it.

    Args:
        image_size: Side of the square input images.
        width: Channels of the first layer.

    Returns:
        A `keras.Model` from images to `4 * width` features.

    ```python
    backbone = tiny_cnn(32, width=16)  # features: [batch, 4 * width]
    assert backbone.output.shape == (None, 64)
    ```
    """
    inputs, x = _standardized_input(image_size)
    for index, multiple in enumerate((1, 2, 4, 4)):
        stride = 1 if index == 0 else 2
        x = _conv_bn(x, width * multiple, 3, stride, f"conv{index + 1}")
    outputs = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, outputs, name="tiny")


def _application_backbone(
    application, name: str, image_size: int, weights: str | None = None
) -> keras.Model:
    inputs, x = _standardized_input(image_size)
    try:
        base = application(
            include_top=False,
            weights=weights,
            input_shape=(image_size, image_size, 3),
            pooling="avg",
        )
    except (TypeError, ValueError) as error:
        message = first_line(error)
        raise UsageError(f"model.backbone: {name} cannot be built: {message}") from None
    outputs = base(x)
    return keras.Model(inputs, outputs, name=name.lower())


def input_image_shape(backbone: keras.Model, input_shape=None) -> tuple:
    """The shape of one input image: `input_shape` if given, else the backbone's own `Input`.

    Raises `UsageError` when the backbone declares no input (a subclassed
    model, or a Sequential without `keras.Input`) and `input_shape` is None.

    ```python
    assert input_image_shape(build_backbone("tiny", image_size=16)) == (16, 16, 3)
    ```
    """
    if input_shape is not None:
        return tuple(input_shape)
    # Functional models, and Sequential ones once they have an Input, declare it.
    inputs = getattr(backbone, "inputs", None)
    if not inputs:
        raise UsageError(
            f"BYOL: cannot infer the input shape of backbone {backbone.name!r} "
            f"({type(backbone).__name__} without keras.Input); pass input_shape=, "
            "e.g. BYOL(backbone, input_shape=(32, 32, 3))"
        )
    if len(inputs) != 1:
        raise UsageError(
            f"BYOL: backbone {backbone.name!r} must take one image input. "
            f"Received: {len(inputs)} inputs"
        )
    return tuple(inputs[0].shape[1:])


def feature_size(backbone: keras.Model, image_shape: tuple) -> int:
    """The size of the backbone's features, building the backbone first if it is not built.

    Raises `UsageError` unless the backbone returns pooled features `[batch, features]`.

    ```python
    assert feature_size(keras.applications.MobileNet(include_top=False, weights=None,
                                                     pooling="avg"), (32, 32, 3)) == 1024
    ```
    """
    images = keras.KerasTensor((None, *image_shape))
    # A symbolic call is Keras's way to build a model (and creates its variables);
    # a built model only needs its output shape computed.
    features = backbone.compute_output_spec(images) if backbone.built else backbone(images)
    if not isinstance(features, keras.KerasTensor) or len(features.shape) != 2:
        shape = getattr(features, "shape", type(features).__name__)
        raise UsageError(
            f"BYOL: backbone {backbone.name!r} must return pooled features [batch, features] "
            f"(add keras.layers.GlobalAveragePooling2D or pooling='avg'). Received: {shape}"
        )
    return int(features.shape[-1])


def synchronize_batchnorm(model: keras.Model) -> keras.Model:
    """Makes every BatchNormalization in `model` (nested models too) use global-batch statistics.

    Under `tf.distribute` each replica otherwise normalises with the
    statistics of its own slice of the batch. The flag is read at call time
    and kept by `get_config`, so it survives cloning (the target network)
    and saving.

    ```python
    backbone = synchronize_batchnorm(build_backbone("resnet18", image_size=32))
    ```
    """
    for layer in all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = True
    return model


def all_layers(layer: keras.layers.Layer):
    """Every layer inside `layer`, depth first, through nested models.

    ```python
    backbone = build_backbone("resnet18", image_size=32)
    norms = [x for x in all_layers(backbone) if isinstance(x, keras.layers.BatchNormalization)]
    ```
    """
    for child in getattr(layer, "layers", []):
        yield child
        yield from all_layers(child)
