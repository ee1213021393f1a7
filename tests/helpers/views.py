"""Hand-made view pairs and the online/target variable pairs the EMA moves."""

import numpy as np

SIZE = 16


def view_pair(batch=8, seed=0):
    rng = np.random.default_rng(seed)
    view1 = rng.uniform(size=(batch, SIZE, SIZE, 3)).astype("float32")
    view2 = np.clip(view1 + rng.normal(scale=0.1, size=view1.shape), 0, 1).astype("float32")
    return view1, view2


def ema_pairs(model):
    online = model.online_backbone.weights + model.online_projector.weights
    target = model.target_backbone.weights + model.target_projector.weights
    return [(o, t) for o, t in zip(online, target, strict=True) if o.trainable]
