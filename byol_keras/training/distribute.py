"""The `tf.distribute` strategy that `train.distribution` names, and who writes the run directory.

```python
# doctest: slow
strategy = make_strategy("mirrored")  # every local GPU (or CPU) as one replica
with strategy.scope():
    model = BYOL(build_backbone("tiny", image_size=16, width=4))
    model.compile(optimizer="adam")
source = load_source("digits", image_size=16)
pairs = pair_dataset(source, make_augmenter("digits", image_size=16), 32)
model.fit(pairs, steps_per_epoch=2)  # GLOBAL batches; Keras splits them across replicas
```

| name | strategy | replicas |
|---|---|---|
| `none` | the default strategy | 1 |
| `mirrored` | `MirroredStrategy` | local devices |
| `multi_worker` | `MultiWorkerMirroredStrategy`, cluster from `TF_CONFIG` | all workers' devices |
| `tpu` | `TPUStrategy` through `TPUClusterResolver` (untested here: no TPU) | TPU cores |

`multi_worker` must be created before TensorFlow runs any op in the process
(collective ops are configured at start-up): `train()` makes it first, and
importing byol_keras runs no op. Later calls return the same strategy.
"""

import json
import os
from pathlib import Path

import tensorflow as tf

from byol_keras.config import DISTRIBUTIONS
from byol_keras.errors import UsageError

_STRATEGIES: dict[str, tf.distribute.Strategy] = {}


def make_strategy(name: str) -> tf.distribute.Strategy:
    """The strategy for `train.distribution` (see the module docstring), made once per process.

    A second MirroredStrategy would reuse the first one's collective keys, and
    a second multi-worker one cannot configure collectives again.
    """
    if name not in _STRATEGIES:
        _STRATEGIES[name] = _new_strategy(name)
    return _STRATEGIES[name]


def _new_strategy(name: str) -> tf.distribute.Strategy:
    if name == "none":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        if not os.environ.get("TF_CONFIG"):
            raise UsageError("train.distribution: multi_worker needs the TF_CONFIG variable set")
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise UsageError(f"train.distribution: must be one of {', '.join(DISTRIBUTIONS)}; got {name!r}")


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run directory: always, except on non-chief workers.

    Under `TF_CONFIG` the chief is the `chief` task or, when the cluster has
    none, worker 0 (the rule in TensorFlow's multi-worker guide).
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
    return resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in cluster


def writable_run_dir(output_dir: str | Path, strategy: tf.distribute.Strategy) -> Path:
    """`output_dir` for the chief, `<output_dir>/.workers/<task>-<index>` for every other worker.

    Every worker must still save checkpoints and models, because saving
    distributed variables can take part in collectives; only the chief's
    copies are read by evaluation and export. Every worker restores the
    chief's checkpoints (`output_dir/checkpoints`), so that a restarted
    cluster resumes from one state, and writes its own where nobody else
    does. This is how TensorFlow's multi-worker fault tolerance
    (tf.keras `BackupAndRestore`) works: all workers read the chief's
    directory, non-chief workers write apart. The folder is fixed per task,
    not a new temporary one, so that restarts reuse it instead of piling up.

    ```python
    from byol_keras.runs import RunDirectory

    strategy = make_strategy("none")  # the default strategy: one process, one device
    run = RunDirectory(writable_run_dir("runs/x", strategy)).create()
    ```
    """
    if is_chief(strategy):
        return Path(output_dir)
    resolver = strategy.cluster_resolver
    return Path(output_dir) / ".workers" / f"{resolver.task_type}-{resolver.task_id}"
