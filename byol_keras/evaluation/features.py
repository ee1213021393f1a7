"""Images in memory and their embeddings: what the kNN monitor, evaluation and pictures share.

Evaluation features are computed without augmentation: each image, at
whatever size its source hands it, goes through the evaluation transform
(`EvalTransform`: resize the short side, centre-crop, antialiased; the
exported models apply the same ops), and the backbone itself standardises
pixels. Images are transformed one by one in tf.data, then batched, so a
source of photos of many sizes works; an image already at the view size
passes unchanged.

```python
backbone = load_model("runs/quickstart/backbone.keras")
transform = EvalTransform.from_config(load_config("runs/quickstart/config.yaml"))
images, labels = source_arrays(load_source("digits", split="test"), transform=transform)
features = Embedder(backbone, transform=transform).embed(images)  # float32 [n, feature_dim]
assert features.shape == (360, 16)
```
"""

import numpy as np
import tensorflow as tf

from byol_keras.augment.eval_transform import EvalTransform
from byol_keras.data.source import keep_labelled


def source_arrays(
    source,
    max_examples: int | None = None,
    seed: int = 0,
    labelled_only: bool = False,
    transform: EvalTransform | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Reads an `ImageSource` into uint8 images [n, S, S, 3] and int32 labels [n].

    Each image goes through `transform`, rounded back to uint8
    (`EvalTransform.to_uint8`); without one, the source's images must
    already share one size. With `max_examples` below the source's size, a
    uniformly random subset chosen with `seed` is kept (in source order);
    the rest is decoded but not held in memory. Folder sources list files
    class by class, so taking the first n would keep only the first
    classes. `labelled_only` then drops examples labelled -1 (the result may
    be empty; otherwise an empty source raises ValueError). The arrays are
    allocated once at the expected size and filled batch by batch, so
    memory peaks at the result, not twice it.

    ```python
    source = load_source("digits", split="test")
    images, labels = source_arrays(source, max_examples=100, seed=0, transform=EvalTransform(32))
    assert images.shape == (100, 32, 32, 3) and images.dtype == np.uint8
    ```
    """
    dataset, capacity = _selected(source, max_examples, seed, labelled_only)
    if transform is not None:
        dataset = dataset.map(
            lambda image, label: (transform.to_uint8(image), label),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    elif None in dataset.element_spec[0].shape.as_list():
        raise ValueError(f"{source.description} has images of several sizes; pass a transform")
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
    """Runs a backbone over images in batches, after the evaluation transform.

    The backbone is called with `training=False`, so BatchNorm uses its moving
    statistics. Build one per backbone and reuse it: the monitor calls it
    every few epochs without retracing. The default transform is
    `EvalTransform` at the backbone's input size (centre crop, ratio 1).

    ```python
    backbone = build_backbone("tiny", image_size=32, width=4)  # e.g. model.online_backbone
    embedder = Embedder(backbone, batch_size=512, transform=EvalTransform(32))
    features = embedder.embed(np.zeros([10, 48, 64, 3], np.uint8))  # float32 [n, feature_dim]
    assert features.shape == (10, 16) and features.dtype == np.float32
    ```
    """

    def __init__(self, backbone, batch_size: int = 256, transform: EvalTransform | None = None):
        self.backbone = backbone
        self.batch_size = batch_size
        size = backbone.input_shape[1]
        self.transform = transform or EvalTransform(size)
        if self.transform.image_size != size:
            raise ValueError(
                f"the transform makes {self.transform.image_size} px images; "
                f"the backbone takes {size} px"
            )
        square = [None, size, size, 3]
        self._forward = tf.function(
            self._features, input_signature=[tf.TensorSpec(square, tf.float32)]
        )
        self._forward_images = tf.function(
            lambda images: self._features(self.transform(images)),
            input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)],
        )

    def _features(self, pixels):
        return tf.cast(self.backbone(pixels, training=False), tf.float32)

    def embed(self, images: np.ndarray) -> np.ndarray:
        """Features of uint8 images [n, h, w, 3] (one size) as float32 [n, feature_dim]."""
        features = np.empty([len(images), self.backbone.output_shape[-1]], np.float32)
        for start in range(0, len(images), self.batch_size):
            batch = tf.constant(images[start : start + self.batch_size])
            features[start : start + len(batch)] = self._forward_images(batch).numpy()
        return features

    def batchable(self, dataset: tf.data.Dataset) -> tf.data.Dataset:
        """`(image, ...)` elements whose images can be batched, for `embed_batch`.

        Images that share one static size (CIFAR, MNIST, digits) stay uint8
        and are transformed a batch at a time inside the traced forward pass,
        as the exported model does; images of varying size are transformed
        one by one here.

        ```python
        backbone = build_backbone("tiny", image_size=16, width=4)
        embedder = Embedder(backbone, transform=EvalTransform(16))
        source = load_source("folder:photos")  # photos of their own sizes, made batchable
        for images, labels in embedder.batchable(source.dataset).batch(256):
            features = embedder.embed_batch(images)
        ```
        """
        if None not in dataset.element_spec[0].shape.as_list():
            return dataset
        return dataset.map(
            lambda image, *rest: (self.transform(image), *rest),
            num_parallel_calls=tf.data.AUTOTUNE,
        )

    def embed_batch(self, batch: tf.Tensor) -> np.ndarray:
        """Features of a batch from `batchable`: uint8 images, or float32 transformed pixels."""
        forward = self._forward_images if batch.dtype == tf.uint8 else self._forward
        return forward(batch).numpy()

    def embed_source(
        self, source, max_examples: int | None = None, seed: int = 0
    ) -> tuple[np.ndarray, np.ndarray]:
        """Features and labels of a source's labelled examples, decoded one batch at a time.

        The same examples as `source_arrays(source, max_examples, seed,
        labelled_only=True, transform=self.transform)`, but the transform's
        float output goes to the backbone unrounded, and only one batch of
        images is in memory at a time: the features of a million 224 px images take 8 GB (2048
        floats each), their pixels 150 GB.

        ```python
        backbone = build_backbone("tiny", image_size=16, width=4)
        source = load_source("digits", split="test", image_size=16)
        features, labels = Embedder(backbone).embed_source(source)
        ```
        """
        dataset, capacity = _selected(source, max_examples, seed, labelled_only=True)
        features = np.empty([capacity, self.backbone.output_shape[-1]], np.float32)
        labels = np.empty([capacity], np.int32)
        count = 0
        for image_batch, label_batch in self.batchable(dataset).batch(self.batch_size).prefetch(2):
            features, labels = _room_for(len(label_batch), count, features, labels)
            features[count : count + len(label_batch)] = self.embed_batch(image_batch)
            labels[count : count + len(label_batch)] = label_batch.numpy()
            count += len(label_batch)
        return features[:count], labels[:count]
