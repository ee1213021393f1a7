"""Mixed precision and XLA: loss-scaled float16, bfloat16 and XLA train with a float32 loss."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from byol_keras.methods.byol import BYOL
from byol_keras.nn.backbones import build_backbone

SIZE = 16


@pytest.fixture(autouse=True)
def _float32_afterwards():
    yield
    keras.config.set_dtype_policy("float32")  # the policy is global; leave it as found


def _pairs(batch=8, steps=2):
    rng = np.random.default_rng(0)
    view1 = rng.uniform(size=(batch * steps, SIZE, SIZE, 3)).astype("float32")
    view2 = np.clip(view1 + rng.normal(scale=0.1, size=view1.shape), 0, 1).astype("float32")
    return view1, view2, tf.data.Dataset.from_tensor_slices((view1, view2)).batch(batch)


def _trained(precision: str, jit_compile: bool = False, steps: int = 2):
    keras.config.set_dtype_policy(precision)
    keras.utils.set_random_seed(0)
    model = BYOL(
        build_backbone("tiny", SIZE, width=4),
        projection_dim=8,
        projector_hidden_dim=16,
        predictor_hidden_dim=16,
        total_steps=10,
    )
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.1, momentum=0.9), jit_compile=jit_compile
    )
    view1, view2, pairs = _pairs(steps=steps)
    history = model.fit(pairs, epochs=1, steps_per_epoch=steps, verbose=0)
    return model, history.history["loss"][-1], view1, view2


@pytest.mark.parametrize(
    ("precision", "compute_dtype"),
    [("float32", "float32"), ("mixed_bfloat16", "bfloat16"), ("mixed_float16", "float16")],
)
def test_each_precision_trains_with_a_float32_loss(precision, compute_dtype):
    model, loss, view1, view2 = _trained(precision)

    assert np.isfinite(loss) and 0.0 <= loss <= 8.0
    # Layers built before compile still take the policy; float16 gets loss scaling.
    is_scaled = isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert is_scaled == (precision == "mixed_float16")
    _, prediction = model.online_projection(view1, training=False)
    assert prediction.dtype == compute_dtype
    step_loss, _ = model.loss_and_projection(view1, view2, training=False)
    assert step_loss.dtype == "float32"
    # Variables, and so the EMA of the target, stay float32.
    assert {v.dtype for v in model.target_backbone.weights} == {"float32"}
    assert int(model.optimizer.iterations.numpy()) >= 1


@pytest.mark.slow
def test_xla_step_matches_the_graph_step():
    eager, eager_loss, view1, _ = _trained("float32", jit_compile=False, steps=1)
    xla, xla_loss, _, _ = _trained("float32", jit_compile=True, steps=1)
    assert xla.jit_compile is True
    assert xla_loss == pytest.approx(eager_loss, rel=1e-4)
    for compiled, graph in zip(xla.weights, eager.weights, strict=True):
        np.testing.assert_allclose(compiled.numpy(), graph.numpy(), atol=1e-4)
