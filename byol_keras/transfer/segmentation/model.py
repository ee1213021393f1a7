"""A segmentation network on a backbone's feature pyramid, and its per-pixel predictions.

The decoder is the semantic head of Panoptic FPN (Kirillov et al. 2019), made
light: a 1x1 lateral convolution brings every pyramid level to
`decoder_channels`, a top-down pass adds each coarser level, upsampled, to
the next finer one (FPN, Lin et al. 2017), a 3x3 convolution smooths each
level, all levels are upsampled to the finest one (stride 4 for ImageNet-stem
ResNets) and summed, and a 3x3 convolution and a 1x1 classifier give class
logits, upsampled bilinearly to the input size. Why this head: it takes any
number of levels at any strides, so it works with every backbone that
`feature_pyramid` accepts; it adds few parameters and little compute next to
the backbone (DeepLabV3+'s atrous pyramid at stride 8 or 16 costs far more on
a CPU); and it is the standard head for transfer figures of self-supervised
backbones on dense tasks (e.g. MoCo, DenseCL, and the BYOL follow-ups use
FPN heads), so the figures compare with theirs in kind.

```python
backbone = build_backbone("resnet18", 64)
segmenter = build_segmenter(backbone, num_classes=11, decoder_channels=64)
logits = segmenter(np.zeros([2, 64, 64, 3], "float32"))  # float [0, 1] images [b, h, w, 3]
assert logits.shape == (2, 64, 64, 11)
```
"""

import keras
import numpy as np
import tensorflow as tf

from byol_keras.transfer.pyramid import feature_pyramid
from byol_keras.transfer.segmentation.metrics import confusion_matrix


@keras.saving.register_keras_serializable(package="byol_keras")
class ResizeLike(keras.layers.Layer):
    """Resizes `x` bilinearly to the height and width of `reference`, whatever they are at run time.

    ```python
    coarse, fine = tf.zeros([1, 4, 4, 8]), tf.zeros([1, 16, 16, 3])
    upsampled = ResizeLike()([coarse, fine])  # coarse resized to fine's spatial size
    assert upsampled.shape == (1, 16, 16, 8)
    ```
    """

    def call(self, inputs):
        x, reference = inputs
        return tf.image.resize(x, tf.shape(reference)[1:3], method="bilinear")

    def compute_output_shape(self, input_shapes):
        x, reference = input_shapes
        return (x[0], reference[1], reference[2], x[3])


def build_segmenter(
    backbone: keras.Model,
    num_classes: int,
    decoder_channels: int = 64,
    freeze_backbone: bool = False,
) -> keras.Model:
    """The backbone's feature pyramid and an FPN semantic head: images in, class logits out.

    The backbone's layers are used, not copied, so fine-tuning the segmenter
    changes them. With `freeze_backbone` they are not trained and their
    BatchNorm layers keep their statistics.

    Args:
        backbone: A functional backbone, e.g. a run's `backbone.keras`.
        num_classes: Classes to predict (the void index is not one).
        decoder_channels: Width of every decoder convolution.
        freeze_backbone: Train the decoder only.

    Returns:
        A `keras.Model` from float [0, 1] images `[b, h, w, 3]` of any size to
        float32 logits `[b, h, w, num_classes]`.

    ```python
    segmenter = build_segmenter(load_model("runs/quickstart/backbone.keras"), 11)
    ```
    """
    pyramid = feature_pyramid(backbone, input_shape=(None, None, 3))
    pyramid.trainable = not freeze_backbone
    images = keras.Input((None, None, 3), name="images")
    maps = pyramid(images)
    strides = sorted(maps, key=lambda name: int(name.split("_")[1]))  # fine to coarse
    laterals = [
        keras.layers.Conv2D(decoder_channels, 1, name=f"lateral_{name}")(maps[name])
        for name in strides
    ]
    top_down = [laterals[-1]]
    for index in range(len(laterals) - 2, -1, -1):
        coarser = ResizeLike(name=f"upsample_{strides[index + 1]}")([top_down[0], laterals[index]])
        top_down.insert(
            0, keras.layers.Add(name=f"top_down_{strides[index]}")([laterals[index], coarser])
        )
    finest = top_down[0]
    fused = []
    for name, level in zip(strides, top_down, strict=True):
        level = _conv_bn_relu(level, decoder_channels, 3, f"smooth_{name}")
        fused.append(
            level if level is finest else ResizeLike(name=f"to_finest_{name}")([level, finest])
        )
    x = keras.layers.Add(name="fuse")(fused) if len(fused) > 1 else fused[0]
    x = _conv_bn_relu(x, decoder_channels, 3, "head")
    logits = keras.layers.Conv2D(num_classes, 1, dtype="float32", name="classifier")(x)
    logits = ResizeLike(name="to_input_size", dtype="float32")([logits, images])
    return keras.Model(images, logits, name="segmenter")


def _conv_bn_relu(x, filters: int, kernel: int, name: str):
    x = keras.layers.Conv2D(filters, kernel, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def predict_classes(segmenter: keras.Model, images: np.ndarray, batch_size: int, sizes=None):
    """Per-pixel class indices of float images, at their size or at `sizes[i]` (h, w) each.

    Logits are resized bilinearly before the arg-max, as the exported model does.
    """
    results = []
    for start in range(0, len(images), batch_size):
        logits = segmenter(images[start : start + batch_size], training=False)
        for offset, one in enumerate(logits):
            size = sizes[start + offset] if sizes is not None else one.shape[:2]
            if tuple(size) != tuple(one.shape[:2]):
                one = tf.image.resize(one, size, method="bilinear")
            results.append(np.argmax(np.asarray(one), axis=-1).astype(np.uint8))
    return results


def predict_confusion(
    segmenter, images, masks, num_classes: int, ignore_index, batch_size: int
) -> np.ndarray:
    """One confusion matrix over all of `images` against `masks` (a list may hold any sizes)."""
    sizes = [mask.shape for mask in masks]
    confusion = np.zeros((num_classes, num_classes), np.int64)
    for predicted, true in zip(
        predict_classes(segmenter, images, batch_size, sizes), masks, strict=True
    ):
        confusion += confusion_matrix(true, predicted, num_classes, ignore_index)
    return confusion
