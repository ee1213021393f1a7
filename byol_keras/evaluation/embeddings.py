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

from byol_keras.data.source import keep_labelled, to_unit_range


def source_arrays(
    source, max_examples: int | None = None, seed: int = 0, labelled_only: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Reads an `ImageSource` into uint8 images [n, S, S, 3] and int32 labels [n].

    With `max_examples` below the source's size, a uniformly random subset
    chosen with `seed` is kept (in source order); the rest is decoded but not
    held in memory. Folder sources list files class by class, so taking the
    first n would keep only the first classes. `labelled_only` then drops
    examples labelled -1 (the result may be empty; otherwise an empty source
    raises ValueError). The arrays are allocated once at the expected size and
    filled batch by batch, so memory peaks at the result, not twice it.

    ```python
    images, labels = source_arrays(source, max_examples=5000, seed=0)
    ```
    """
    dataset, capacity = _selected(source, max_examples, seed, labelled_only)
    image_shape = dataset.element_spec[0].shape.as_list()
    images = np.empty([capacity, *image_shape], np.uint8)
    labels = np.empty([capacity], np.int32)
    count = 0
    for image_batch, label_batch in dataset.batch(1024).prefetch(2).as_numpy_iterator():
        images, labels = _room_for(len(label_batch), count, images, labels)
        images[count : count + len(label_batch)] = image_batch
        labels[count : count + len(label_batch)] = label_batch
        count += len(label_batch)
    if not count and not labelled_only:
        raise ValueError(f"{source.description} yielded no images")
    return images[:count], labels[:count]


def _selected(source, max_examples: int | None, seed: int, labelled_only: bool):
    """The source's dataset cut to a seeded subset and to labelled examples; an upper bound on n."""
    # Until evaluation has a transform of its own for photos of their own sizes.
    source.require_one_size("evaluation")
    dataset, capacity = source.dataset, source.num_examples
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
        capacity = max_examples
    if labelled_only:
        dataset = keep_labelled(dataset)
    return dataset, capacity


def _room_for(incoming: int, count: int, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """The arrays, enlarged when a source yields more examples than it announced (rare)."""
    if count + incoming <= len(arrays[0]):
        return arrays
    size = max(count + incoming, 2 * len(arrays[0]))
    grown = []
    for array in arrays:
        larger = np.empty([size, *array.shape[1:]], array.dtype)
        larger[:count] = array[:count]
        grown.append(larger)
    return tuple(grown)


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
        return tf.cast(self.backbone(to_unit_range(images), training=False), tf.float32)

    def embed(self, images: np.ndarray) -> np.ndarray:
        """Features of uint8 images [n, S, S, 3] as float32 [n, feature_dim]."""
        features = np.empty([len(images), self.backbone.output_shape[-1]], np.float32)
        for start in range(0, len(images), self.batch_size):
            batch = tf.constant(images[start : start + self.batch_size])
            features[start : start + len(batch)] = self._forward(batch).numpy()
        return features

    def embed_source(
        self, source, max_examples: int | None = None, seed: int = 0
    ) -> tuple[np.ndarray, np.ndarray]:
        """Features and labels of a source's labelled examples, decoded one batch at a time.

        The same examples, in the same batches, as `embed(source_arrays(source,
        max_examples, seed, labelled_only=True)[0])`, so the same features, but
        only one batch of images is in memory at a time: the features of a
        million 224 px images take 8 GB (2048 floats each), their pixels 150 GB.

        ```python
        features, labels = Embedder(backbone).embed_source(load_source("digits", split="test"))
        ```
        """
        dataset, capacity = _selected(source, max_examples, seed, labelled_only=True)
        features = np.empty([capacity, self.backbone.output_shape[-1]], np.float32)
        labels = np.empty([capacity], np.int32)
        count = 0
        for image_batch, label_batch in dataset.batch(self.batch_size).prefetch(2):
            features, labels = _room_for(len(label_batch), count, features, labels)
            features[count : count + len(label_batch)] = self._forward(image_batch).numpy()
            labels[count : count + len(label_batch)] = label_batch.numpy()
            count += len(label_batch)
        return features[:count], labels[:count]
