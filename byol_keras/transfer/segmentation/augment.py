"""Joint augmentation of an image and its class mask, for fine-tuning a segmenter.

The geometry (a random rescaling, a random crop, a horizontal flip) is drawn
once and applied to both; the image is resampled bilinearly and the mask by
nearest neighbour, so a mask only ever holds values it held before, plus
`PADDING` (-1) where the crop reaches past a downscaled image: padding is
never a class, with or without a void index. Colour jitter then changes the
image alone.

```python
augment = JointAugment(crop_size=(24, 32), scale_range=(0.75, 1.5))
image, mask = tf.zeros([36, 48, 3]), tf.zeros([36, 48], tf.uint8)
image, mask = augment(image, mask, seed=tf.constant([3, 7]))
assert image.shape[:2] == mask.shape == (24, 32)
```
"""

from dataclasses import dataclass

import tensorflow as tf

# The mask value of pixels outside the rescaled image. Negative, so that it is
# neither a class nor a dataset's void index, and training weights it 0.
PADDING = -1


@dataclass(frozen=True)
class JointAugment:
    """Random scale, crop and flip of (image, mask), then colour jitter of the image.

    Args:
        crop_size: (height, width) of the output.
        scale_range: [low, high] factors by which the pair is resized first.
        jitter: Strength of the brightness (added), contrast and saturation
            (factors in [1 - jitter, 1 + jitter]) jitter; 0 turns it off.
        flip: Whether to flip left-right with probability 1/2.
    """

    crop_size: tuple
    scale_range: tuple = (0.75, 1.5)
    jitter: float = 0.0
    flip: bool = True

    def __call__(self, image: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor):
        """Augments one float [0, 1] image `[H, W, 3]` and int mask `[H, W]` with a stateless seed.

        Returns (float32 image `[h, w, 3]`, int32 mask `[h, w]`) at `crop_size`.
        """
        seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 6)
        height, width = self.crop_size
        size = tf.cast(tf.shape(image)[:2], tf.float32)
        low, high = self.scale_range
        scale = tf.random.stateless_uniform([], seeds[0], low, high)
        scaled = tf.maximum(tf.cast(tf.round(size * scale), tf.int32), 1)
        image = tf.image.resize(image, scaled, method="bilinear")
        mask = tf.image.resize(tf.cast(mask, tf.int32)[..., tf.newaxis], scaled, method="nearest")
        # One tensor for the crop and the flip, so that both draw the same window.
        pad_h = tf.maximum(height - scaled[0], 0)
        pad_w = tf.maximum(width - scaled[1], 0)
        paddings = [[0, pad_h], [0, pad_w], [0, 0]]
        image = tf.pad(image, paddings)
        mask = tf.pad(mask, paddings, constant_values=PADDING)
        stacked = tf.concat([image, tf.cast(mask, tf.float32)], axis=-1)
        stacked = tf.image.stateless_random_crop(stacked, [height, width, 4], seed=seeds[1])
        if self.flip:
            stacked = tf.image.stateless_random_flip_left_right(stacked, seed=seeds[2])
        image = stacked[..., :3]
        mask = tf.cast(tf.round(stacked[..., 3]), tf.int32)
        if self.jitter > 0:
            image = self._jitter(image, seeds[3:])
        return image, mask

    def _jitter(self, image: tf.Tensor, seeds: tf.Tensor) -> tf.Tensor:
        strength = self.jitter
        image = tf.image.stateless_random_brightness(image, strength, seed=seeds[0])
        image = tf.image.stateless_random_contrast(image, 1 - strength, 1 + strength, seeds[1])
        image = tf.image.stateless_random_saturation(image, 1 - strength, 1 + strength, seeds[2])
        return tf.clip_by_value(image, 0.0, 1.0)
