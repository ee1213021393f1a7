"""The evaluation transform: uint8 images of any size to the backbone's square [0, 1] input.

Evaluation (linear, kNN, retrieval, fine-tuning, the pictures, the kNN
monitor), `byol-keras embed` and the exported SavedModel and ONNX model all
call `EvalTransform`, so that an image gets the same pixels whoever embeds it.

- `center_crop` (the default, the standard evaluation transform): resize the
  short side to `image_size / crop_ratio`, then keep the central
  `image_size` x `image_size` square. The aspect is kept. With `crop_ratio`
  1.0 the square spans the whole short side.
- `squash`: resize the whole image to `image_size` x `image_size` (the aspect
  is lost), as sources did before views were cropped from the original.

Both resample with the triangle (bilinear) filter, widened by the reduction
factor when shrinking, i.e. antialiased, with half-pixel centres: the filter
of `tf.image.resize(..., antialias=True)` and Pillow's `BILINEAR`. The crop
is taken in continuous coordinates, so the filter of an output pixel near
the square's edge also reaches the pixels just outside it, as when the whole
resized image is cropped. An image that already has the target size, with
`crop_ratio` 1.0, comes out exactly as it went in (scaled to [0, 1]).

Why not `tf.image.resize(antialias=True)` itself: it lowers to the
`ScaleAndTranslate` op, which tf2onnx 1.17 cannot convert. The same filter is
written here as two small weight matrices (output rows x input rows, output
columns x input columns) applied with matrix products, which every converter
handles; the ONNX model then computes what evaluation computes, up to float
rounding. The products cost about 3·S·H·W multiply-adds an image: 0.03 G for
a 640x480 photo to 32 px, 8 G for a 12-megapixel one to 224 px (about a
ResNet-50 forward pass; 0.5 s on a 2-core machine, where ScaleAndTranslate
takes 0.06 s).

```python
transform = EvalTransform(image_size=32)  # or EvalTransform.from_config(config)
pixels = transform(tf.zeros([48, 64, 3], tf.uint8))  # float32 [32, 32, 3] in [0, 1]
pixels = transform(tf.zeros([8, 48, 64, 3], tf.uint8))  # float32 [8, 32, 32, 3]
assert pixels.shape == (8, 32, 32, 3) and pixels.dtype == tf.float32
```
"""

from dataclasses import dataclass

import tensorflow as tf

from byol_keras.data.source import to_unit_range

RESIZE_MODES = ("center_crop", "squash")


@dataclass(frozen=True)
class EvalTransform:
    """Resize (and centre-crop) uint8 images to float32 `image_size` squares in [0, 1].

    Args:
        image_size: The side of the square output, the backbone's input size.
        resize: `"center_crop"` (aspect kept) or `"squash"` (aspect lost).
        crop_ratio: For `center_crop`, the side of the square as a fraction
            of the image's short side, in (0, 1]; 0.875 is the usual
            ImageNet evaluation crop (resize to 256, crop 224).

    ```python
    transform = EvalTransform(28, crop_ratio=0.875)
    images = tf.zeros([4, 48, 64, 3], tf.uint8)
    assert transform(images).shape == (4, 28, 28, 3)  # (batch, 28, 28, 3) for [batch, h, w, 3]
    ```
    """

    image_size: int
    resize: str = "center_crop"
    crop_ratio: float = 1.0

    def __post_init__(self):
        if isinstance(self.image_size, bool) or not isinstance(self.image_size, int):
            raise ValueError(f"image_size must be an integer, got {self.image_size!r}")
        if self.image_size < 1:
            raise ValueError(f"image_size must be at least 1, got {self.image_size}")
        if self.resize not in RESIZE_MODES:
            modes = ", ".join(RESIZE_MODES)
            raise ValueError(f"resize must be one of {modes}, got {self.resize!r}")
        if not 0.0 < self.crop_ratio <= 1.0:
            raise ValueError(f"crop_ratio must lie in (0, 1], got {self.crop_ratio!r}")

    @classmethod
    def from_config(cls, config) -> "EvalTransform":
        """The transform a run's config names: `data.image_size`, `eval.resize`, `eval.crop_ratio`.

        ```python
        transform = EvalTransform.from_config(load_config("runs/quickstart/config.yaml"))
        ```
        """
        return cls(config.data.image_size, config.eval.resize, config.eval.crop_ratio)

    def __call__(self, images: tf.Tensor) -> tf.Tensor:
        """float32 [..., S, S, 3] in [0, 1] from uint8 [H, W, 3] or [batch, H, W, 3] (one H, W)."""
        images = tf.convert_to_tensor(images)
        pixels = to_unit_range(images)
        if self.crop_ratio == 1.0 and images.shape[-3:-1] == (self.image_size, self.image_size):
            # The weights would be identity matrices, and the products exact: skip them.
            # Known only for static shapes (CIFAR-size sources), never in the exported graph.
            return pixels
        if images.shape.rank == 3:
            return self._resampled(pixels[tf.newaxis])[0]
        return self._resampled(pixels)

    def _resampled(self, pixels: tf.Tensor) -> tf.Tensor:
        """float32 [batch, S, S, 3] from float32 [batch, H, W, 3]."""
        shape = tf.shape(pixels)
        rows, columns = self._weights(shape[1], shape[2])
        channels_first = tf.transpose(pixels, [0, 3, 1, 2])  # [batch, 3, H, W]
        resized = tf.matmul(tf.matmul(rows, channels_first), columns, transpose_b=True)
        result = tf.transpose(resized, [0, 2, 3, 1])
        result.set_shape([pixels.shape[0], self.image_size, self.image_size, pixels.shape[-1]])
        return result

    def to_uint8(self, images: tf.Tensor) -> tf.Tensor:
        """The transform rounded back to uint8, for images held in memory or shown in pictures.

        Within half a grey level of `__call__`; exact for images already at the target size.
        """
        pixels = tf.round(self(images) * 255.0)
        return tf.cast(tf.clip_by_value(pixels, 0.0, 255.0), tf.uint8)

    def _weights(self, height: tf.Tensor, width: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """The [S, height] and [S, width] resampling matrices of the crop box."""
        height_f, width_f = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
        if self.resize == "squash":
            return (
                _triangle_weights(height, 0.0, height_f, self.image_size),
                _triangle_weights(width, 0.0, width_f, self.image_size),
            )
        side = self.crop_ratio * tf.minimum(height_f, width_f)
        return (
            _triangle_weights(height, (height_f - side) / 2.0, side, self.image_size),
            _triangle_weights(width, (width_f - side) / 2.0, side, self.image_size),
        )

    def describe(self) -> dict:
        """The transform as the export manifest and evaluation results record it.

        ```python
        assert EvalTransform(32).describe()["resize"] == "center_crop"
        ```
        """
        if self.resize == "squash":
            text = f"resize the whole image to {self.image_size}x{self.image_size} (aspect lost)"
        else:
            text = (
                f"resize the short side to {self.image_size / self.crop_ratio:g}, then take the "
                f"central {self.image_size}x{self.image_size} square (aspect kept)"
            )
        return {
            "resize": self.resize,
            "crop_ratio": self.crop_ratio,
            "image_size": self.image_size,
            "description": text + "; bilinear, antialiased (triangle filter widened by the "
            "reduction factor), half-pixel centres",
        }


def _triangle_weights(
    in_size: tf.Tensor, start: tf.Tensor, extent: tf.Tensor, out_size: int
) -> tf.Tensor:
    """Row j: the weights of the input pixels for output pixel j, sampling [start, start+extent).

    Output pixel j's centre lies at `start + (j + 0.5) * step` in input
    coordinates (pixel i spans [i, i + 1)), with `step = extent / out_size`.
    The triangle filter has radius `max(step, 1)`: one input pixel when
    enlarging (plain bilinear), `step` pixels when shrinking (antialiased).
    Each row is normalised to sum to 1, so the image's edge is not darkened.
    """
    step = extent / float(out_size)
    radius = tf.maximum(step, 1.0)
    centres = start + (tf.range(out_size, dtype=tf.float32) + 0.5) * step
    positions = tf.cast(tf.range(in_size), tf.float32) + 0.5
    distance = tf.abs(positions[tf.newaxis, :] - centres[:, tf.newaxis])
    weights = tf.maximum(0.0, 1.0 - distance / radius)
    return weights / tf.reduce_sum(weights, axis=1, keepdims=True)
