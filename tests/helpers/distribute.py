"""Subprocess entry points for tests/training/test_distribute.py (devices set before TF starts).

`python tests/helpers/distribute.py mirrored OUT.npz` trains the same tiny BYOL
on one device and under a 2-replica MirroredStrategy and writes both results;
likewise a BYOL with default arguments (`default_*`), and `methods` SimCLR and SimSiam.
`python tests/helpers/distribute.py worker RUN_DIR OUT.npz [STEPS [EVERY]]` runs
`train()` as one worker of the cluster in TF_CONFIG and writes its final weights.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

SIZE, GLOBAL_BATCH, STEPS = 16, 8, 2


def mirrored(out_path: str) -> None:
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras

    rng = np.random.default_rng(0)
    view1 = rng.uniform(size=(GLOBAL_BATCH * STEPS, SIZE, SIZE, 3)).astype("float32")
    view2 = np.clip(view1 + rng.normal(scale=0.1, size=view1.shape), 0, 1).astype("float32")
    pairs = tf.data.Dataset.from_tensor_slices((view1, view2)).batch(GLOBAL_BATCH)
    initial = None
    results = {}
    # One MirroredStrategy for both runs: a second one would reuse the first's collective keys.
    mirrored_strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    initial_default = None
    runs = (
        ("single", True),
        ("mirrored", True),
        ("mirrored_unsynced", False),
        # BYOL's default sync_batchnorm=None, with a backbone that has no BatchNorm of its own.
        ("default_single", None),
        ("default_mirrored", None),
        ("default_mirrored_unsynced", False),
    )
    for name, sync in runs:
        strategy = mirrored_strategy if "mirrored" in name else tf.distribute.get_strategy()
        with strategy.scope():
            if name.startswith("default"):
                model = _default_byol(sync)
                initial_default = initial_default or model.get_weights()
                model.set_weights(initial_default)
            else:
                model = _tiny_byol(sync)
                initial = initial or model.get_weights()
                model.set_weights(initial)
            model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.5, momentum=0.9))
        history = model.fit(pairs, epochs=1, steps_per_epoch=STEPS, verbose=0)
        results[f"{name}_replicas"] = strategy.num_replicas_in_sync
        results[f"{name}_loss"] = history.history["loss"][-1]
        results[f"{name}_online"] = _flat(model.online_backbone.weights + _heads(model))
        results[f"{name}_target"] = _flat(model.target_backbone.weights + _target_head(model))
        # Largest difference between the replicas' copies of any model variable.
        results[f"{name}_replica_spread"] = max(
            float(np.max(np.abs(copies[0] - copies[-1])))
            for variable in model.weights
            for copies in [[c.numpy() for c in strategy.experimental_local_results(variable.value)]]
        )
    np.savez(out_path, **results)


def _tiny_byol(sync: bool, method: str = "byol"):
    import keras

    from byol_keras.catalog import method_class
    from byol_keras.nn.backbones import build_backbone, synchronize_batchnorm

    keras.utils.set_random_seed(0)
    backbone = build_backbone("tiny", SIZE, width=4)
    schedule = {"tau_base": 0.9} if method == "byol" else {}
    return method_class(method)(
        synchronize_batchnorm(backbone) if sync else backbone,
        projection_dim=8,
        projector_hidden_dim=16,
        predictor_hidden_dim=16,
        total_steps=10,
        sync_batchnorm=sync,
        **schedule,
    )


def methods(out_path: str) -> None:
    """SimCLR and SimSiam on one device and on 2 mirrored replicas, from equal weights."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras

    rng = np.random.default_rng(0)
    view1 = rng.uniform(size=(GLOBAL_BATCH * STEPS, SIZE, SIZE, 3)).astype("float32")
    view2 = np.clip(view1 + rng.normal(scale=0.1, size=view1.shape), 0, 1).astype("float32")
    pairs = tf.data.Dataset.from_tensor_slices((view1, view2)).batch(GLOBAL_BATCH)
    mirrored_strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    results = {}
    for method in ("simclr", "simsiam"):
        initial = None
        for name, strategy in (("single", tf.distribute.get_strategy()), ("mirrored", None)):
            strategy = strategy or mirrored_strategy
            with strategy.scope():
                model = _tiny_byol(True, method=method)
                initial = initial or model.get_weights()
                model.set_weights(initial)
                model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.5))
            history = model.fit(pairs, epochs=1, steps_per_epoch=STEPS, verbose=0)
            results[f"{method}_{name}_replicas"] = strategy.num_replicas_in_sync
            results[f"{method}_{name}_loss"] = history.history["loss"][-1]
            results[f"{method}_{name}_online"] = _flat(model.trainable_variables)
    np.savez(out_path, **results)


def _default_byol(sync):
    """The issue's Sequential backbone and BYOL's default arguments (`sync` False: a control)."""
    import keras

    from byol_keras.methods.byol import BYOL

    keras.utils.set_random_seed(0)
    backbone = keras.Sequential(
        [
            keras.Input((SIZE, SIZE, 3)),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
        ]
    )
    settings = {} if sync is None else {"sync_batchnorm": sync}
    return BYOL(
        backbone, projection_dim=8, projector_hidden_dim=16, predictor_hidden_dim=16, **settings
    )


def _heads(model):
    return model.online_projector.weights + model.predictor.weights


def _target_head(model):
    return model.target_projector.weights


def _flat(variables) -> np.ndarray:
    return np.concatenate([np.ravel(v.numpy()) for v in variables])


def worker(run_dir: str, out_path: str, steps: str = "3", every_steps: str = "null") -> None:
    from byol_keras.config import load_config
    from byol_keras.pretrain import train

    config = load_config(
        None,
        [
            "data.image_size=16",
            "augment.preset=digits",
            "model.backbone=tiny",
            "model.width=4",
            "model.projection_dim=8",
            "model.projector_hidden_dim=16",
            "model.predictor_hidden_dim=16",
            "model.sync_batchnorm_backbone=true",
            "optimizer.name=sgd",
            "optimizer.base_lr=0.5",
            "optimizer.warmup_epochs=0",
            "train.batch_size=16",
            "train.epochs=1",
            f"train.steps_per_epoch={steps}",
            f"train.checkpoint_every_steps={every_steps}",
            "train.distribution=multi_worker",
            "train.verbose=0",
        ],
    )
    summary = train(config, run_dir)
    import json

    from byol_keras.registration import load_model

    # The chief writes RUN_DIR; the other worker RUN_DIR/.workers/worker-1.
    task = json.loads(os.environ["TF_CONFIG"])["task"]
    wrote_to = run_dir if task["index"] == 0 else os.path.join(run_dir, ".workers", "worker-1")
    model = load_model(os.path.join(wrote_to, "model.keras"))
    np.savez(
        out_path,
        online=_flat(model.online_backbone.weights + _heads(model)),
        target=_flat(model.target_backbone.weights + _target_head(model)),
        steps=summary["steps"],
        resumed_from_step=summary["resumed_from_step"],
        loss=summary["final_loss"],
        wrote_to=wrote_to,
    )


if __name__ == "__main__":
    {"mirrored": mirrored, "methods": methods, "worker": worker}[sys.argv[1]](*sys.argv[2:])
