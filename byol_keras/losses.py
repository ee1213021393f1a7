"""BYOL's regression loss between online predictions and target projections."""

from keras import ops


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
    loss = normalized_mse(q_online_view1, z_target_view2)  # shape [batch]
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
    loss = symmetric_byol_loss(q1, q2, ops.stop_gradient(z1_t), ops.stop_gradient(z2_t))
    ```
    """
    per_example = normalized_mse(q1, z2_target) + normalized_mse(q2, z1_target)
    return ops.mean(per_example)


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
