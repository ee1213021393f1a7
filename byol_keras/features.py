"""Images in memory and their embeddings: what the kNN monitor, evaluation and pictures share.

Evaluation features are computed without augmentation: the source already
resized every image to the run's `image_size`, and the backbone itself
standardises pixels, so images only need scaling from uint8 to [0, 1].

```python
images, labels = source_arrays(load_source("digits", split="test", image_size=16))
features = Embedder(backbone).embed(images)  # float32 [n, feature_dim]
```
"""

import numpy as np
import tensorflow as tf


def source_arrays(
    source, max_examples: int | None = None, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Reads an `ImageSource` into uint8 images [n, S, S, 3] and int32 labels [n].

    With `max_examples` below the source's size, a uniformly random subset
    chosen with `seed` is kept (in source order); the rest is decoded but not
    held in memory. Folder sources list files class by class, so taking the
    first n would keep only the first classes.

    ```python
    images, labels = source_arrays(source, max_examples=5000, seed=0)
    ```
    """
    dataset = source.dataset
    if max_examples is not None and max_examples < source.num_examples:
        chosen = np.random.default_rng(seed).choice(
            source.num_examples, size=max_examples, replace=False
        )
        keep = np.zeros([source.num_examples], bool)
        keep[chosen] = True
        keep = tf.constant(keep)
        dataset = (
            dataset.enumerate()
            .filter(lambda index, example: tf.gather(keep, index))
            .map(lambda index, example: example)
        )
    images, labels = [], []
    for image_batch, label_batch in dataset.batch(1024).prefetch(2).as_numpy_iterator():
        images.append(image_batch)
        labels.append(label_batch)
    if not images:
        raise ValueError(f"{source.description} yielded no images")
    return np.concatenate(images), np.concatenate(labels).astype(np.int32)


class Embedder:
    """Runs a backbone over uint8 images in batches, traced once per image shape.

    The backbone is called with `training=False`, so BatchNorm uses its moving
    statistics. Build one per backbone and reuse it: the monitor calls it
    every few epochs without retracing.

    ```python
    embedder = Embedder(model.online_backbone, batch_size=512)
    features = embedder.embed(images)  # float32 [n, feature_dim]
    ```
    """

    def __init__(self, backbone, batch_size: int = 256):
        self.backbone = backbone
        self.batch_size = batch_size
        size = backbone.input_shape[1:]
        self._forward = tf.function(
            self._features,
            input_signature=[tf.TensorSpec([None, *size], tf.uint8)],
            reduce_retracing=True,
        )

    def _features(self, images):
        scaled = tf.cast(images, tf.float32) / 255.0
        return tf.cast(self.backbone(scaled, training=False), tf.float32)

    def embed(self, images: np.ndarray) -> np.ndarray:
        """Features of uint8 images [n, S, S, 3] as float32 [n, feature_dim]."""
        outputs = [
            self._forward(tf.constant(images[start : start + self.batch_size])).numpy()
            for start in range(0, len(images), self.batch_size)
        ]
        if not outputs:
            return np.zeros([0, self.backbone.output_shape[-1]], np.float32)
        return np.concatenate(outputs)
