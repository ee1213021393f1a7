"""A wall-clock budget (`train.time_budget`): measure the speed first, then plan the run's length.

With a budget the number of updates is not `train.epochs` × steps: the run
trains `CALIBRATION_BATCHES` batches, times those after the first
`TRACING_BATCHES` (tracing makes them slow), and plans the largest number of
updates whose training ends within the budget counted from the start of
`train()`. The learning-rate and τ schedules are then stretched over exactly
that many updates. The plan is written to the run directory, so that a resumed
run keeps it instead of measuring again.

The calibration times batches only. Keras's work at each epoch's end
(checkpoints, logs, the kNN monitor) and a machine that slows down are seen
by `Keeper` while the plan trains: when the speed it measures, all of that
included, would end the run more than `REPLAN_TOLERANCE` of the budget early
or late, it stops at that epoch's end and `keep` plans what is left again.
"""

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import keras

from byol_keras.config import Config
from byol_keras.errors import UsageError
from byol_keras.methods.steps import batches_done
from byol_keras.runs import RunDirectory, atomic_write_text
from byol_keras.training.optimizers import build_schedule
from byol_keras.training.resume import FitCall, remaining_fit_calls

CALIBRATION_BATCHES = 20
TRACING_BATCHES = 2
# A plan is revised only when it would miss the budget by more than this share of it, and at
# most MAX_REVISIONS times: each revision retraces the step, and one epoch's speed is noisy.
REPLAN_TOLERANCE = 0.03
MAX_REVISIONS = 3

# The clock the budget is counted with; tests replace it with a deterministic one.
clock = time.perf_counter
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Calibration:
    """What the calibration measured: all that a plan is computed from.

    Args:
        elapsed_seconds: Time since `train()` started, calibration included.
        updates_done: Optimizer updates trained by then.
        updates_per_second: The speed after the tracing batches.
        fit_call_seconds: What a `fit` call costs beyond its steps at that speed
            (tracing, the first batches); the stretched schedules retrace once.
        monitor_seconds: One kNN measurement, estimated (0 without the monitor).
    """

    elapsed_seconds: float
    updates_done: int
    updates_per_second: float
    fit_call_seconds: float
    monitor_seconds: float = 0.0


def planned_updates(
    budget_seconds: float, calibration: Calibration, monitor_every_updates: int | None = None
) -> int:
    """The most updates that end within `budget_seconds`, never fewer than those already done.

    After the calibration come one retraced `fit` call, the updates at the
    measured speed, and the kNN measurements: one every `monitor_every_updates`
    updates (at most `remaining / every + 1` of them) and the final one.

    ```python
    calibration = Calibration(elapsed_seconds=10, updates_done=20, updates_per_second=4,
                              fit_call_seconds=5)
    assert planned_updates(100, calibration) == 20 + (100 - 10 - 5) * 4
    ```
    """
    c = calibration
    monitor = c.monitor_seconds if monitor_every_updates else 0.0
    left = budget_seconds - c.elapsed_seconds - c.fit_call_seconds - 2 * monitor
    per_update = 1 / c.updates_per_second + (monitor / monitor_every_updates if monitor else 0.0)
    return c.updates_done + max(math.floor(left / per_update), 0)


@dataclass(frozen=True)
class BudgetPlan:
    """A budget, what calibration measured, and the number of updates planned from both."""

    budget_seconds: float
    planned_updates: int
    updates_per_epoch: int
    calibration: Calibration

    @classmethod
    def make(
        cls,
        budget_seconds: float,
        calibration: Calibration,
        updates_per_epoch: int,
        monitor_every_updates: int | None = None,
    ) -> "BudgetPlan":
        planned = planned_updates(budget_seconds, calibration, monitor_every_updates)
        return cls(budget_seconds, planned, updates_per_epoch, calibration)

    @property
    def epochs(self) -> float:
        """The planned updates in epochs, a fraction when the last epoch is cut short."""
        return self.planned_updates / self.updates_per_epoch

    def summary(self) -> dict:
        """The plan as the run's summary.json records it."""
        return {
            "budget_seconds": self.budget_seconds,
            "updates_per_second": self.calibration.updates_per_second,
            "planned_updates": self.planned_updates,
            "epochs": round(self.epochs, 3),
            "calibration": asdict(self.calibration),
        }

    def write(self, path: str | Path) -> None:
        fields = {**asdict(self), "calibration": asdict(self.calibration)}
        atomic_write_text(path, json.dumps(fields, indent=2))

    @classmethod
    def read(cls, path: str | Path) -> "BudgetPlan | None":
        """The plan written at `path`, None when there is none; `UsageError` when unreadable."""
        path = Path(path)
        if not path.is_file():
            return None
        try:
            fields = json.loads(path.read_text())
            return cls(**{**fields, "calibration": Calibration(**fields["calibration"])})
        except (UnicodeDecodeError, ValueError, TypeError, KeyError) as error:
            raise UsageError(
                f"--output: {path} is corrupted ({type(error).__name__}); delete it to measure "
                "the speed again, or use a new --output"
            ) from None


def plan(
    config: Config,
    model: keras.Model,
    run: RunDirectory,
    steps_per_epoch: int,
    started: float,
    fit: Callable[[list[FitCall], keras.callbacks.Callback, bool], None],
    monitor=None,
) -> BudgetPlan:
    """The run's plan: the one recorded in `run` when resuming, else measured now and recorded.

    Measuring calls `fit(calls, meter, ends_inside_epoch)` to train the next
    `CALIBRATION_BATCHES` batches; the budget counts from `started` (a `clock()`
    reading at the start of `train()`). A resumed run whose `train.time_budget`
    changed plans again from the speed measured at its start. `monitor`, the
    kNN monitor if any, is estimated (`estimate_seconds`) and told that none of
    the measurement's epochs is the last.
    """
    seconds = config.train.time_budget_seconds
    steps_done = batches_done(model.optimizer)
    updates_per_epoch = max(steps_per_epoch // config.train.accumulation_steps, 1)
    every = updates_per_epoch * config.eval.knn_every_epochs if monitor else None
    recorded = BudgetPlan.read(run.budget_path) if steps_done else None
    if recorded is not None:
        if recorded.budget_seconds == seconds:
            return recorded
        log.info("train.time_budget changed: planned again from the speed measured at the start")
        return BudgetPlan.make(seconds, recorded.calibration, updates_per_epoch, every)

    target = steps_done + CALIBRATION_BATCHES
    if monitor is not None:
        monitor.final_epoch = math.ceil(target / steps_per_epoch) + 1
    calls = remaining_fit_calls(steps_done, steps_per_epoch, target)
    speed, fit_call_seconds = measure(
        lambda meter: fit(calls, meter, target % steps_per_epoch != 0),
        config.train.accumulation_steps,
    )
    monitor_seconds = monitor.estimate_seconds(model.online_backbone) if monitor else 0.0
    calibration = Calibration(
        elapsed_seconds=clock() - started,
        updates_done=int(model.optimizer.iterations.numpy()),
        updates_per_second=speed,
        fit_call_seconds=fit_call_seconds,
        monitor_seconds=monitor_seconds,
    )
    planned = BudgetPlan.make(seconds, calibration, updates_per_epoch, every)
    planned.write(run.budget_path)
    if planned.planned_updates == calibration.updates_done:
        log.warning(
            "train.time_budget: set-up and the speed's measurement took %.0f of the %.0f s; "
            "training stops after them",
            calibration.elapsed_seconds,
            seconds,
        )
    log.info(
        "time budget %.0f s: %.3g updates/s measured, %d updates planned (%.2f epochs)",
        seconds,
        speed,
        planned.planned_updates,
        planned.epochs,
    )
    return planned


def keep(
    plan: BudgetPlan,
    model: keras.Model,
    config: Config,
    run: RunDirectory,
    started: float,
    fit: Callable[[int, keras.callbacks.Callback | None], None],
) -> BudgetPlan:
    """Trains to `plan` with `fit(total_batches, keeper)`, planning again when it would miss.

    `fit` trains up to `total_batches` batches and passes `keeper` to `model.fit`
    as the last callback. When the keeper stops training, the revised plan is
    written to `run`, the schedules are stretched over it, and `fit` is called
    again, at most `MAX_REVISIONS` times.

    Returns:
        The plan the run trained to.
    """
    for revision in range(MAX_REVISIONS + 1):
        keeper = Keeper(plan, started) if revision < MAX_REVISIONS else None
        fit(plan.planned_updates * config.train.accumulation_steps, keeper)
        if keeper is None or keeper.revision is None:
            return plan
        log.info(
            "time budget: %.3g updates/s with each epoch's end, not %.3g: %d updates planned, "
            "not %d",
            keeper.revision.calibration.updates_per_second,
            plan.calibration.updates_per_second,
            keeper.revision.planned_updates,
            plan.planned_updates,
        )
        plan = keeper.revision
        plan.write(run.budget_path)
        stretch_schedules(model, config, plan.planned_updates, plan.updates_per_epoch)
    return plan


class Keeper(keras.callbacks.Callback):
    """Stops `fit` at an epoch's end when the plan, at the speed seen, would miss its budget.

    The speed counts the updates and the seconds from the end of the call's
    tracing batches to this epoch's end, whatever ran in between: a keeper
    placed last sees every other callback's epoch-end work. When the plan
    would end more than `REPLAN_TOLERANCE` of the budget early or late, the
    keeper sets `revision`, the plan for the updates left at that speed, and
    stops training.

    Args:
        plan: The plan being trained.
        started: The `clock()` reading the budget counts from.
    """

    def __init__(self, plan: BudgetPlan, started: float):
        super().__init__()
        self.plan = plan
        self.started = started
        self.revision: BudgetPlan | None = None
        self._batches = 0
        self._since: tuple[float, int] | None = None

    def on_train_begin(self, logs=None) -> None:
        self._batches = 0
        self._since = None

    def on_train_batch_end(self, batch, logs=None) -> None:
        self._batches += 1
        if self._batches == TRACING_BATCHES:
            self._since = (clock(), self._updates())

    def on_epoch_end(self, epoch, logs=None) -> None:
        if self._since is None or self.revision is not None:
            return
        now, updates = clock(), self._updates()
        seconds, trained = now - self._since[0], updates - self._since[1]
        left = self.plan.planned_updates - updates
        if seconds <= 0 or trained <= 0 or left <= 0:
            return
        speed = trained / seconds
        miss = now - self.started + left / speed - self.plan.budget_seconds
        if abs(miss) <= REPLAN_TOLERANCE * self.plan.budget_seconds:
            return
        old = self.plan.calibration
        calibration = Calibration(
            elapsed_seconds=now - self.started,
            updates_done=updates,
            updates_per_second=speed,  # the kNN monitor's epoch-end work included
            # The next call retraces; the final kNN measurement comes after the last update.
            fit_call_seconds=old.fit_call_seconds + old.monitor_seconds,
        )
        revised = BudgetPlan.make(
            self.plan.budget_seconds, calibration, self.plan.updates_per_epoch
        )
        if revised.planned_updates != self.plan.planned_updates:
            self.revision = revised
            self.model.stop_training = True

    def _updates(self) -> int:
        return int(self.model.optimizer.iterations.numpy())


def stretch_schedules(
    model: keras.Model, config: Config, total_updates: int, updates_per_epoch: int
) -> None:
    """Makes the compiled model's learning-rate and τ schedules end after `total_updates`."""
    model.optimizer.learning_rate = build_schedule(
        config.optimizer,
        config.train.batch_size,
        total_steps=total_updates,
        steps_per_epoch=updates_per_epoch,
        accumulation_steps=config.train.accumulation_steps,
    )
    model.total_steps.assign(total_updates)
    # The traced step holds the old schedule's lengths as constants: the next fit traces anew.
    model.train_function = None


def measure(fit: Callable[[keras.callbacks.Callback], None], accumulation_steps: int = 1):
    """Runs `fit(meter)` over the calibration batches; returns updates/s and the fit call's extra.

    `fit` must pass `meter` to `model.fit` and train more than `TRACING_BATCHES` batches.

    Returns:
        `(updates_per_second, fit_call_seconds)`: the speed after the tracing
        batches, and how much longer the call took than its batches at that speed.
    """
    meter = _BatchEnds()
    called = clock()
    fit(meter)
    ends = meter.times
    if len(ends) <= TRACING_BATCHES:
        raise ValueError(f"calibration timed {len(ends)} batches, needs > {TRACING_BATCHES}")
    traced = ends[TRACING_BATCHES - 1]
    seconds_per_batch = (ends[-1] - traced) / (len(ends) - TRACING_BATCHES)
    extra = traced - called - TRACING_BATCHES * seconds_per_batch
    return 1 / (seconds_per_batch * accumulation_steps), max(extra, 0.0)


class _BatchEnds(keras.callbacks.Callback):
    """Reads `clock` at the end of each training batch."""

    def __init__(self):
        super().__init__()
        self.times: list[float] = []

    def on_train_batch_end(self, batch, logs=None) -> None:
        self.times.append(clock())
