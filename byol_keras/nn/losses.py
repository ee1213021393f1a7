"""The losses: BYOL's regression onto targets, SimCLR's NT-Xent, and the collapse indicator."""

import tensorflow as tf
from keras import ops

# Added to an anchor's similarity with itself, which the softmax must leave out.
_EXCLUDED = -1e9


def normalized_mse(prediction, target):
    """Per-example BYOL loss, `2 - 2 * cos(prediction, target)`.

    This equals the squared distance between the l2-normalised vectors, so it
    lies in [0, 4]. Callers stop the gradient through `target` themselves.

    Args:
        prediction: The online network's predictions, `[batch, dim]`.
        target: The target network's projections, `[batch, dim]`.

    Returns:
        A `[batch]` tensor of losses.

    ```python
    q_online_view1, z_target_view2 = np.ones([4, 8], "float32"), -np.ones([4, 8], "float32")
    loss = normalized_mse(q_online_view1, z_target_view2)  # shape [batch]
    assert np.allclose(loss, 4.0)  # 2 - 2 cos = 4 for opposite directions
    ```
    """
    prediction = ops.cast(prediction, "float32")
    target = ops.cast(target, "float32")
    cosine = ops.sum(l2_normalize(prediction) * l2_normalize(target), axis=-1)
    return 2.0 - 2.0 * cosine


def symmetric_byol_loss(q1, q2, z1_target, z2_target):
    """The BYOL objective: both directions summed, then averaged over the batch.

    `q1` is the online prediction for view 1 and `z2_target` the target
    projection of view 2; the first term regresses view 1 onto view 2 and the
    second the reverse. Summing (not averaging) the directions is what the
    paper does; averaging halves the gradients (lightly's bug #1037).

    Args:
        q1: Online predictions for view 1, `[batch, dim]`.
        q2: Online predictions for view 2.
        z1_target: Target projections of view 1.
        z2_target: Target projections of view 2.

    Returns:
        A scalar tensor, in [0, 8].

    ```python
    q1, q2, z1_t, z2_t = np.random.default_rng(0).normal(size=(4, 2, 8)).astype("float32")
    loss = symmetric_byol_loss(q1, q2, ops.stop_gradient(z1_t), ops.stop_gradient(z2_t))
    ```
    """
    per_example = normalized_mse(q1, z2_target) + normalized_mse(q2, z1_target)
    return ops.mean(per_example)


def nt_xent_loss(z1, z2, temperature: float = 0.2):
    """SimCLR's NT-Xent (InfoNCE) loss over the 2N views of a batch of N images.

    Each of the 2N l2-normalised views in `concat([z1, z2])` is an anchor.
    Its positive is the other view of the same image, N rows away; its
    negatives are the other 2N - 2 views. The loss is the cross-entropy of
    the softmax over the anchor's 2N - 1 cosine similarities divided by
    `temperature`, averaged over the 2N anchors.

    Under a `tf.distribute` strategy with more than one replica, each
    replica's anchors are compared with the views of the whole global
    batch, gathered with the replica context's `all_gather` (whose gradient
    flows back to the replica that computed each view). Each replica then
    returns the mean over its own anchors; their mean is the loss of the
    global batch, which needs equal per-replica batches.

    Args:
        z1: Outputs for view 1, `[batch, dim]`.
        z2: Outputs for view 2, `[batch, dim]`, row i the same image as in `z1`.
        temperature: Divides the cosine similarities; lower is sharper.

    Returns:
        A scalar float32 tensor, at least 0; log(2N - 1) when all views are alike.

    ```python
    projection_view1, projection_view2 = np.random.default_rng(0).normal(size=(2, 4, 8))
    loss = nt_xent_loss(projection_view1, projection_view2, temperature=0.2)
    ```
    """
    z1 = l2_normalize(ops.cast(z1, "float32"))
    z2 = l2_normalize(ops.cast(z2, "float32"))
    all_z1, all_z2, first = _whole_batch(z1, z2)
    anchors = ops.concatenate([z1, z2], axis=0)
    candidates = ops.concatenate([all_z1, all_z2], axis=0)
    logits = ops.matmul(anchors, ops.transpose(candidates)) / temperature
    images = ops.shape(all_z1)[0]
    rows = first + ops.arange(ops.shape(z1)[0], dtype="int32")
    itself = ops.concatenate([rows, rows + images], axis=0)
    positive = ops.concatenate([rows + images, rows], axis=0)
    logits = logits + _EXCLUDED * ops.one_hot(itself, 2 * images, dtype="float32")
    positive_logits = ops.take_along_axis(logits, positive[:, None], axis=1)[:, 0]
    return ops.mean(ops.logsumexp(logits, axis=1) - positive_logits)


def _whole_batch(z1, z2):
    """Every replica's `z1` and `z2`, in replica order, and the first row of this replica's."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return z1, z2, 0
    first = ops.cast(context.replica_id_in_sync_group, "int32") * ops.shape(z1)[0]
    return context.all_gather(z1, axis=0), context.all_gather(z2, axis=0), first


def l2_normalize(x, epsilon: float = 1e-12):
    """Scales each row of `x` to unit l2 norm, safe for all-zero rows."""
    squared_norm = ops.sum(ops.square(x), axis=-1, keepdims=True)
    return x * ops.rsqrt(ops.maximum(squared_norm, epsilon))


def collapse_indicator(projections):
    """Standard deviation of l2-normalised projections times sqrt(dim).

    It is about 1 for embeddings spread evenly over the sphere and falls to 0
    when every input maps to the same point (representation collapse).

    Args:
        projections: A `[batch, dim]` tensor.

    Returns:
        A scalar tensor.
    """
    normalized = l2_normalize(ops.cast(projections, "float32"))
    dim = ops.cast(ops.shape(normalized)[-1], "float32")
    return ops.mean(ops.std(normalized, axis=0)) * ops.sqrt(dim)
