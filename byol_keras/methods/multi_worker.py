"""Keras 3's TF trainer under MultiWorkerMirroredStrategy: what the method classes work around.

Kept out of `training/distribute.py`, which reads the config, so that the
method classes import no config.
"""

import tensorflow as tf


class MultiWorkerWorkarounds:
    """Two workarounds for Keras 3's TF trainer under MultiWorkerMirroredStrategy.

    Mixed into `SelfSupervisedModel`, so that the method classes hold only
    their algorithms. Both are harmless for the other strategies; see
    tensorflow/tensorflow#72388.

    ```python
    class MyModel(MultiWorkerWorkarounds, keras.Model): ...
    ```
    """

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Every sub-model is built from its Input, so only the optimizer is
        # left to build. Keras 3's own version first all-reduces a whole
        # (view1, view2) batch, which MultiWorkerMirroredStrategy rejects.
        with self.distribute_strategy.scope():
            if self.optimizer is not None and not self.optimizer.built:
                self.optimizer.build(self.trainable_variables)
            self._post_build()

    def _make_function(self, step_function):
        # Keras reduces multi-worker step outputs with MEAN over axis 0, which
        # fails for scalar metrics; as [1] vectors they average to scalars.
        strategy = self.distribute_strategy
        multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
        if not (multi_worker and strategy.extended._in_multi_worker_mode()):
            return super()._make_function(step_function)

        def vector_logs(data):
            logs = step_function(data)
            return {k: tf.reshape(v, [1]) if v.shape.rank == 0 else v for k, v in logs.items()}

        return super()._make_function(vector_logs)
