"""Everything around the methods' `train_step` that makes a run: optimizers, callbacks, state.

- `optimizers.py`, `lars.py`: the optimizer from the config; LARS (You et al. 2017).
- `schedules.py`: the warm-up cosine learning rate.
- `callbacks.py`, `guards.py`, `interrupt.py`: checkpoints, throughput, stopping on a
  non-finite loss, collapse warnings, Ctrl-C/SIGTERM.
- `resume.py`, `run_lock.py`: resuming a run, one writer at a time (the run directory
  itself is `byol_keras.runs`).
- `budget.py`: `train.time_budget`, the speed measured and the run's length planned from it.
- `distribute.py`: `tf.distribute` strategies and which worker writes the run directory.

The modules are imported one by one (`from byol_keras.training.lars import LARS`); this
file imports none of them. Training builds on the methods, never the reverse: what the
method classes need (the accumulation arithmetic, BYOL's τ) lives in `byol_keras.methods`.
"""
