"""Image retrieval by cosine similarity: Recall@k and mAP@R, per query and per class.

Each query (a test image) ranks the gallery (the training images) by cosine
similarity of their embeddings; gallery items of the query's class are the
relevant ones.

- Recall@k: 1 when at least one of the k nearest gallery items is relevant,
  else 0, averaged over queries (the metric learning convention, not the
  fraction of relevant items retrieved).
- mAP@R (Musgrave, Belongie and Lim, "A Metric Learning Reality Check",
  ECCV 2020): with R the number of gallery items of the query's class,
  AP@R = (1/R) Σ_{i≤R} P(i)·rel(i), where P(i) is the precision among the
  first i results and rel(i) is 1 when the i-th result is relevant.
  Averaged over queries. A perfect ranking scores 1.

Equal similarities rank the lower gallery index first.

```python
train_features, train_labels = np.eye(4, dtype="float32"), np.array([0, 0, 1, 1])
test_features, test_labels = train_features[[0, 2]] + 0.1, np.array([0, 1])
per_query = retrieval_per_query(test_features, test_labels, train_features, train_labels)
figures = retrieval_figures(per_query, test_labels, ["cat", "dog"])
assert (figures["map_at_r"], figures["recall_at_1"]) == (0.75, 1.0)
```
"""

import numpy as np
import tensorflow as tf

from byol_keras.evaluation.knn import l2_normalize_rows, top_k_neighbours

RECALL_KS = (1, 5)
# Similarities held per query chunk (float32, with an int64 index each): 2^24 is 192 MiB.
CHUNK_VALUES = 1 << 24


def retrieval_per_query(
    query_features: np.ndarray,
    query_labels: np.ndarray,
    gallery_features: np.ndarray,
    gallery_labels: np.ndarray,
    ks: tuple[int, ...] = RECALL_KS,
    query_chunk: int | None = None,
    gallery_chunk: int = 8192,
) -> dict[str, np.ndarray]:
    """Recall@k for each k in `ks` and AP@R of every query, as float arrays [n_query].

    Queries are ranked against the gallery one chunk of queries at a time,
    keeping only the top max(R_max, max(ks)) of each, with R_max the largest
    class in the gallery. Memory thus holds the gallery features plus
    query_chunk × (R_max + gallery_chunk) similarities and indices, never
    n_query × n_gallery; by default `query_chunk` keeps that product near
    `CHUNK_VALUES` (at least one query per chunk, at most 1024).

    Args:
        query_features: Embeddings [n_query, D].
        query_labels: Class indices [n_query], each present in the gallery.
        gallery_features: Embeddings [n_gallery, D].
        gallery_labels: Class indices [n_gallery], >= 0.
        ks: The k of each Recall@k.
        query_chunk: Queries per chunk; default from `CHUNK_VALUES`.
        gallery_chunk: Gallery rows per similarity block.

    Returns:
        `{"recall_at_<k>": ..., "map_at_r": ...}`, one value per query.

    ```python
    features, labels = np.eye(4, dtype="float32"), np.array([0, 0, 1, 1])
    per_query = retrieval_per_query(features, labels, features, labels)
    per_query["map_at_r"].mean()
    ```
    """
    query_labels = np.asarray(query_labels, np.int64)
    gallery_labels = np.asarray(gallery_labels, np.int64)
    if len(query_features) != len(query_labels) or len(gallery_features) != len(gallery_labels):
        raise ValueError("every query and gallery item needs exactly one label")
    if len(gallery_labels) == 0:
        raise ValueError("the gallery is empty")
    if min(query_labels.min(initial=0), gallery_labels.min()) < 0:
        raise ValueError("labels must be class indices >= 0")
    class_sizes = np.bincount(gallery_labels, minlength=int(query_labels.max(initial=0)) + 1)
    relevant_counts = class_sizes[query_labels]  # R of every query
    if np.any(relevant_counts == 0):
        missing = sorted(set(query_labels[relevant_counts == 0].tolist()))
        raise ValueError(f"query classes {missing[:5]} have no gallery items")
    depth = min(max(int(class_sizes.max()), *ks), len(gallery_labels))
    if query_chunk is None:
        query_chunk = int(np.clip(CHUNK_VALUES // (depth + gallery_chunk), 1, 1024))
    gallery = tf.constant(l2_normalize_rows(gallery_features))
    queries = l2_normalize_rows(query_features)
    result = {f"recall_at_{k}": np.empty([len(query_labels)]) for k in ks}
    result["map_at_r"] = np.empty([len(query_labels)])
    for start in range(0, len(query_labels), query_chunk):
        stop = start + query_chunk
        counts = relevant_counts[start:stop]
        chunk_depth = min(max(int(counts.max()), *ks), len(gallery_labels))
        chunk = tf.constant(queries[start:stop])
        _, index = top_k_neighbours(chunk, gallery, chunk_depth, gallery_chunk)
        relevant = gallery_labels[index.numpy()] == query_labels[start:stop, None]
        for k in ks:
            result[f"recall_at_{k}"][start:stop] = relevant[:, :k].any(axis=1)
        result["map_at_r"][start:stop] = average_precision_at_r(relevant, counts)
    return result


def average_precision_at_r(relevant: np.ndarray, relevant_counts: np.ndarray) -> np.ndarray:
    """AP@R of ranked results: `relevant` [n, depth] (depth >= R) marks relevant results.

    ```python
    assert average_precision_at_r(np.array([[True, False, True]]), np.array([2])).tolist() == [0.5]
    ```
    """
    relevant = np.asarray(relevant, bool)
    relevant_counts = np.asarray(relevant_counts)
    ranks = np.arange(1, relevant.shape[1] + 1)
    within_r = ranks[None, :] <= relevant_counts[:, None]
    hits = relevant & within_r
    precision = np.cumsum(hits, axis=1) / ranks[None, :]
    return (precision * hits).sum(axis=1) / relevant_counts


def retrieval_figures(
    per_query: dict[str, np.ndarray], query_labels: np.ndarray, class_names: list[str]
) -> dict:
    """Each figure averaged over all queries, and per class by name (None without queries).

    ```python
    features, labels = np.eye(4, dtype="float32"), np.array([0, 0, 1, 1])
    per_query = retrieval_per_query(features, labels, features, labels)
    figures = retrieval_figures(per_query, labels, ["cat", "dog"])
    figures["per_class"]["cat"]["map_at_r"]
    ```
    """
    query_labels = np.asarray(query_labels)
    figures: dict = {name: float(values.mean()) for name, values in per_query.items()}
    per_class = {}
    for index, class_name in enumerate(class_names):
        mask = query_labels == index
        per_class[class_name] = (
            {name: float(values[mask].mean()) for name, values in per_query.items()}
            if mask.any()
            else None
        )
    figures["per_class"] = per_class
    return figures


__all__ = ["average_precision_at_r", "retrieval_figures", "retrieval_per_query"]
