"""Weighted k-nearest-neighbour classification on embeddings, in bounded memory.

The classifier of InstDisc (Wu et al. 2018), used by lightly and solo-learn to
monitor self-supervised training: cosine similarity to a labelled memory bank,
the `k` most similar bank entries vote for their class with weight
exp(similarity / temperature), and the class with the largest summed weight
wins. Similarities are computed one (query chunk × bank chunk) block at a time
and only a running top-k is kept, so memory never holds all
n_query × n_bank similarities at once.

This module depends only on NumPy and TensorFlow: the training-time monitor
and the evaluation protocols both use it.
"""

import numpy as np
import tensorflow as tf

# Similarities are computed in blocks of at most this many queries × bank entries.
QUERY_CHUNK, BANK_CHUNK = 1024, 8192


def l2_normalize_rows(features: np.ndarray) -> np.ndarray:
    """Scales every row to unit length (rows of zeros stay zero).

    ```python
    assert np.allclose(l2_normalize_rows(np.array([[3.0, 4.0]])), [[0.6, 0.8]])
    ```
    """
    features = np.asarray(features, np.float32)
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.maximum(norms, 1e-12)


def knn_class_scores(
    bank_features: np.ndarray,
    bank_labels: np.ndarray,
    query_features: np.ndarray,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    query_chunk: int = QUERY_CHUNK,
    bank_chunk: int = BANK_CHUNK,
) -> np.ndarray:
    """Returns each query's class scores, the summed exp(cosine / T) of its k nearest bank entries.

    `k` larger than the bank uses the whole bank. Features need not be
    normalised; the cosine similarity normalises them.

    ```python
    train_features, train_labels = np.eye(4, dtype="float32"), np.array([0, 1, 2, 3])
    test_features = np.array([[0.9, 0.1, 0.0, 0.0]], "float32")
    scores = knn_class_scores(train_features, train_labels, test_features, num_classes=4)
    assert scores.argmax(axis=1).tolist() == [0]
    ```
    """
    bank_labels = np.asarray(bank_labels, np.int64)
    if len(bank_features) != len(bank_labels):
        raise ValueError(f"{len(bank_features)} bank features but {len(bank_labels)} bank labels")
    if len(bank_features) == 0:
        raise ValueError("the kNN memory bank is empty")
    if k < 1 or temperature <= 0:
        raise ValueError(f"k must be >= 1 and temperature > 0, got k={k}, T={temperature}")
    if bank_labels.min() < 0 or bank_labels.max() >= num_classes:
        raise ValueError(f"bank labels must lie in [0, {num_classes}); found negative or larger")
    bank = tf.constant(l2_normalize_rows(bank_features))
    labels = tf.constant(bank_labels)
    queries = l2_normalize_rows(query_features)
    k = min(k, len(bank_labels))
    scores = []
    for start in range(0, len(queries), query_chunk):
        similarity, index = top_k_neighbours(
            tf.constant(queries[start : start + query_chunk]), bank, k, bank_chunk
        )
        neighbour_labels = tf.gather(labels, index)
        weights = tf.exp(similarity / temperature)
        votes = tf.one_hot(neighbour_labels, num_classes, dtype=tf.float32)
        scores.append(tf.einsum("qk,qkc->qc", weights, votes).numpy())
    if not scores:
        return np.zeros([0, num_classes], np.float32)
    return np.concatenate(scores)


def nearest_neighbours(
    queries: np.ndarray,
    gallery: np.ndarray,
    k: int,
    query_chunk: int = 1024,
    gallery_chunk: int = 8192,
) -> tuple[np.ndarray, np.ndarray]:
    """The `k` gallery rows most similar (cosine) to each query: similarities and indices.

    Both arrays are [n_query, min(k, n_gallery)], most similar first; equal
    similarities rank the lower gallery index first, whatever the chunk sizes.
    Memory holds the normalised gallery and, per query chunk, at most
    query_chunk × (k + gallery_chunk) similarities.

    ```python
    train_features = np.random.default_rng(0).normal(size=(20, 8)).astype("float32")
    similarity, index = nearest_neighbours(train_features[:3], train_features, k=5)
    assert index[:, 0].tolist() == [0, 1, 2]  # each is its own nearest neighbour
    ```
    """
    if len(gallery) == 0:
        raise ValueError("the gallery is empty")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    bank = tf.constant(l2_normalize_rows(gallery))
    queries = l2_normalize_rows(queries)
    k = min(k, len(gallery))
    similarities = np.empty([len(queries), k], np.float32)
    indices = np.empty([len(queries), k], np.int64)
    for start in range(0, len(queries), query_chunk):
        chunk = tf.constant(queries[start : start + query_chunk])
        similarity, index = top_k_neighbours(chunk, bank, k, gallery_chunk)
        similarities[start : start + len(chunk)] = similarity.numpy()
        indices[start : start + len(chunk)] = index.numpy()
    return similarities, indices


def top_k_neighbours(queries: tf.Tensor, bank: tf.Tensor, k: int, bank_chunk: int):
    """The k largest dot products of each query row with the bank rows, and their bank indices.

    One bank chunk at a time, keeping a running top-k, so memory holds
    queries × (k + bank_chunk) values. Rows should be L2-normalised.
    """
    best_similarity = best_index = None
    for start in range(0, int(bank.shape[0]), bank_chunk):
        block = tf.matmul(queries, bank[start : start + bank_chunk], transpose_b=True)
        similarity, index = tf.math.top_k(block, k=min(k, int(block.shape[1])))
        index = tf.cast(index, tf.int64) + start
        if best_similarity is not None:
            # Merging two top-k lists and keeping the top k gives the top k of the union;
            # top_k ranks the earlier position first among equals, and earlier is lower.
            similarity = tf.concat([best_similarity, similarity], axis=1)
            index = tf.concat([best_index, index], axis=1)
            similarity, position = tf.math.top_k(similarity, k=min(k, int(similarity.shape[1])))
            index = tf.gather(index, position, batch_dims=1)
        best_similarity, best_index = similarity, index
    return best_similarity, best_index


def knn_top1(
    bank_features: np.ndarray,
    bank_labels: np.ndarray,
    query_features: np.ndarray,
    query_labels: np.ndarray,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
) -> float:
    """Top-1 accuracy (a fraction in [0, 1]) of the weighted kNN classifier on labelled queries.

    ```python
    features, labels = np.eye(4, dtype="float32"), np.array([0, 1, 2, 3])
    assert knn_top1(features, labels, features, labels, num_classes=4) == 1.0
    ```
    """
    scores = knn_class_scores(
        bank_features, bank_labels, query_features, num_classes, k=k, temperature=temperature
    )
    return float(np.mean(scores.argmax(axis=1) == np.asarray(query_labels)))
