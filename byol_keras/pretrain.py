"""The pretraining story, top to bottom: config → data → views → method → callbacks → run dir.

Read this file to know what `byol-keras train` does, for BYOL, SimSiam or
SimCLR alike. Each step calls one small module: `data` for sources, `augment`
for the views, `builders` for the network (`nn/` and `methods/`), `optimizers`
and `schedules` for the update rule, `callbacks` for what happens around each
step, and `runs` for where everything is written.
"""

import logging
import math
from pathlib import Path

import keras
import tensorflow as tf

from byol_keras import onednn
from byol_keras.augment.eval_transform import EvalTransform
from byol_keras.augment.pipelines import image_batches, make_augmenter, pair_dataset
from byol_keras.builders import build_model
from byol_keras.config import Config
from byol_keras.data import ImageSource, source_from_config
from byol_keras.errors import UsageError
from byol_keras.evaluation.monitor import KnnMonitor
from byol_keras.methods.base import SelfSupervisedModel
from byol_keras.methods.steps import batches_done
from byol_keras.nn.init_weights import IMAGENET
from byol_keras.runs import RunDirectory
from byol_keras.training import budget
from byol_keras.training.callbacks import Checkpoints, Throughput
from byol_keras.training.distribute import make_strategy, writable_run_dir
from byol_keras.training.guards import CollapseWarning, StopOnNonFiniteLoss
from byol_keras.training.interrupt import StopOnSignal
from byol_keras.training.optimizers import build_optimizer
from byol_keras.training.recalibrate import recalibrate_batchnorm
from byol_keras.training.resume import check_config_change, remaining_fit_calls
from byol_keras.training.run_lock import run_lock

log = logging.getLogger(__name__)


def train(config: Config, output_dir: str | Path, resume_with_changes: bool = False) -> dict:
    """Pretrains a backbone with BYOL as `config` says and returns the run summary.

    Restarting with the same `output_dir` resumes from its latest checkpoint
    if the config matches the one recorded there; `resume_with_changes`
    accepts a different one (see `resume.check_config_change`). Nothing is
    written before the config, the data and the model have been built.

    Args:
        config: The run's `Config` (see `load_config`).
        output_dir: The run directory, created or resumed.
        resume_with_changes: Whether to resume a run whose recorded config
            differs from `config`.

    Returns:
        The summary also written to `<output_dir>/summary.json`: final loss,
        collapse and τ, steps, images per second, how the run resumed, and
        the plan of `train.time_budget`.

    ```python
    # doctest: slow
    config = load_config("configs/quickstart.yaml", ["train.epochs=1", "model.width=4"])
    summary = train(config, "runs/new")  # the quickstart itself trains 30 epochs
    summary["final_loss"], summary["images_per_second"]
    ```
    """
    started = budget.clock()
    # First: multi-worker collectives must be configured before TensorFlow runs an op.
    strategy = make_strategy(config.train.distribution)
    _seed_everything(config.train.seed, config.train.deterministic)
    keras.mixed_precision.set_dtype_policy(config.train.precision)

    # 1. Data: a source of (uint8 image, label) examples.
    source = source_from_config(config, config.data.source, config.data.split)
    log.info("training data: %s", source.description)
    steps_per_epoch = _steps_per_epoch(config, source)

    # 2. Views: BYOL's two asymmetric augmentations, in tf.data or on the device.
    augmenter, batches = _views(config, source)

    # 3. Networks and update rule: one update every `accumulation_steps` batches.
    updates_per_epoch = max(steps_per_epoch // config.train.accumulation_steps, 1)
    total_updates = updates_per_epoch * config.train.epochs
    shared = RunDirectory(output_dir)  # the chief's: every worker restores its checkpoints
    # A resumed run's checkpoint holds its weights: model.init_weights is not read again.
    resuming = tf.train.latest_checkpoint(str(shared.checkpoints_dir)) is not None
    model = _compiled_model(
        config, strategy, augmenter, total_updates, updates_per_epoch, init_weights=not resuming
    )
    run = RunDirectory(writable_run_dir(output_dir, strategy))
    monitor = _knn_monitor(config, run)  # opens data.val_source before anything is written

    # 4. The run directory, held by this process alone from here on.
    with run_lock(run.lock_path):
        checkpoints = Checkpoints(
            model,
            run.checkpoints_dir,
            every_steps=config.train.checkpoint_every_steps,
            keep=config.train.keep_checkpoints,
            restore_from=shared.checkpoints_dir,
        )
        steps_done = _start_or_resume(
            config, model, strategy, run, shared, checkpoints, total_updates, resume_with_changes
        )

        # 5. Training: the rest of an interrupted epoch, then the whole epochs left.
        # A time budget first measures the speed, then sets the number of batches.
        callbacks = _Callbacks(config, run, checkpoints, monitor, resumed=steps_done > 0)
        history: dict[str, list] = {}
        plan = None
        with callbacks.stop_on_signal:

            def fit_to(total_steps: int, keeper: keras.callbacks.Callback | None = None) -> None:
                for knn in monitor:
                    knn.final_epoch = math.ceil(total_steps / steps_per_epoch)
                done = batches_done(model.optimizer)
                calls = remaining_fit_calls(done, steps_per_epoch, total_steps)
                if calls:
                    run.set_aside_results(steps_done)  # results of a finished run, now retrained
                _fit(model, batches, calls, callbacks, config, history, keeper)

            if config.train.time_budget is not None:
                plan = budget.plan(
                    config,
                    model,
                    run,
                    steps_per_epoch,
                    started,
                    lambda calls, meter, inside: _fit(
                        model, batches, calls, callbacks, config, history, meter, inside
                    ),
                    monitor[0] if monitor else None,
                )
                budget.stretch_schedules(model, config, plan.planned_updates, updates_per_epoch)
                if steps_done:  # a resumed run keeps its plan: the budget was counted before
                    fit_to(plan.planned_updates * config.train.accumulation_steps)
                else:
                    plan = budget.keep(plan, model, config, run, started, fit_to)
            else:
                fit_to(config.train.epochs * steps_per_epoch)
            if callbacks.stop_on_signal.received is not None:  # arrived after the last batch
                callbacks.stop_on_signal.stop()

        # 6. The run directory: final model, standalone backbone, and last, the summary.
        recalibrated = recalibrate_batchnorm(config, model.online_backbone, source)
        model.save(run.model_path)
        model.online_backbone.save(run.backbone_path)
        last = {key: values[-1] for key, values in history.items() if values}
        return run.finish(
            {
                "epochs": round(plan.epochs, 3) if plan else config.train.epochs,
                "steps": int(model.optimizer.iterations.numpy()),
                "final_loss": last.get("loss"),
                "final_collapse": last.get("collapse"),
                "final_tau": last.get("tau"),
                "final_knn_top1": last.get("knn_top1"),
                "images_per_second": callbacks.throughput.images_per_second,
                "skipped_files": source.skipped_files,
                "train_examples": source.num_examples,
                "wall_time_seconds": budget.clock() - started,
                "resumed_from_epoch": steps_done // steps_per_epoch,
                "resumed_from_step": steps_done,
                "warnings": callbacks.collapse.warnings,
                "replicas": strategy.num_replicas_in_sync,
                "onednn": onednn.enabled(),
                "init_weights": _init_weights_record(config.model.init_weights),
                "time_budget": plan.summary() if plan else None,
                "precise_bn_batches": recalibrated,
            }
        )


def _views(config: Config, source: ImageSource):
    """The augmenter and the batches: view pairs, or uint8 images that the model augments."""
    augmenter = make_augmenter(
        config.augment.preset,
        image_size=config.data.image_size,
        seed=config.train.seed,
        **config.augment.overrides(),
    )
    # On the device, the model's augmenter makes the views; images of their own
    # sizes still get their crops cut in tf.data (image_batches says how).
    batches = (image_batches if config.augment.on_device else pair_dataset)(
        source,
        augmenter=augmenter,
        batch_size=config.train.batch_size,
        shuffle_buffer=config.data.shuffle_buffer,
        seed=config.train.seed,
        cache=config.data.cache,
    )
    return augmenter, batches


def _compiled_model(
    config: Config,
    strategy,
    augmenter,
    total_updates: int,
    updates_per_epoch: int,
    init_weights: bool = True,
) -> SelfSupervisedModel:
    """The compiled `model.method` model, with the augmenter in it when views are made on device."""
    # Variables made in the scope are mirrored; fit splits each global batch across replicas.
    with strategy.scope():
        model = build_model(
            config,
            total_updates,
            augmenter if config.augment.on_device else None,
            init_weights=init_weights,
        )
        model.compile(
            optimizer=build_optimizer(
                config.optimizer,
                config.train.batch_size,
                total_steps=total_updates,
                steps_per_epoch=updates_per_epoch,
                accumulation_steps=config.train.accumulation_steps,
            ),
            jit_compile=config.train.jit_compile,
        )
    return model


def _start_or_resume(
    config: Config,
    model: SelfSupervisedModel,
    strategy,
    run: RunDirectory,
    shared: RunDirectory,
    checkpoints: Checkpoints,
    total_updates: int,
    resume_with_changes: bool,
) -> int:
    """Checks a resumed run's config, marks the run unfinished, restores; returns the steps done."""
    if checkpoints.latest_to_restore is not None:
        changed = check_config_change(
            shared.read_config_dict(), config, resume_with_changes, where=str(shared.root)
        )
        if changed:
            log.info("resuming with changed config keys: %s", ", ".join(changed))
    run.mark_unfinished()
    run.write_config(config)
    with strategy.scope():  # restoring builds the optimizer's slots, which must be mirrored
        steps_done = checkpoints.restore()
        # The checkpoint holds the τ schedule's length it was trained with; a run
        # given more epochs must follow the new length, as its learning rate does.
        model.total_steps.assign(total_updates)
    if steps_done:
        log.info("resuming from %s after %d steps", checkpoints.latest_to_restore, steps_done)
    return steps_done


class _Callbacks:
    """What runs around each training step, in `ordered`, the order it must run in."""

    def __init__(
        self,
        config: Config,
        run: RunDirectory,
        checkpoints: Checkpoints,
        monitor: list[KnnMonitor],
        resumed: bool,
    ):
        self.throughput = Throughput(config.train.batch_size)
        self.collapse = CollapseWarning(
            config.train.collapse_threshold, config.train.collapse_patience
        )
        self.metrics_csv = keras.callbacks.CSVLogger(str(run.metrics_path), append=resumed)
        # Ctrl-C and SIGTERM save a checkpoint at the next update and raise TrainingInterrupted.
        self.stop_on_signal = StopOnSignal(checkpoints)
        # What works within an epoch, for a fit call that stops inside one.
        self.within_epoch = [
            StopOnNonFiniteLoss(),  # before Checkpoints, so that a diverged step is never saved
            checkpoints,
            self.stop_on_signal,  # saves through Checkpoints, after the loss was found finite
        ]
        self.ordered = [
            *self.within_epoch,
            self.throughput,
            self.collapse,
            keras.callbacks.TensorBoard(str(run.logs_dir), update_freq="epoch"),
            # Before CSVLogger, which takes its columns from the logs it is handed.
            *monitor,
            self.metrics_csv,
        ]


def _fit(
    model: SelfSupervisedModel,
    batches,
    calls: list,
    callbacks: _Callbacks,
    config: Config,
    history: dict[str, list],
    meter: keras.callbacks.Callback | None = None,
    ends_inside_epoch: bool = False,
) -> None:
    """Runs the `fit` calls and extends `history` with theirs.

    A last call that `ends_inside_epoch` (the speed's measurement) gets only
    the callbacks that work within an epoch: its end is not the epoch's.
    """
    for call in calls:
        inside = ends_inside_epoch and call is calls[-1]
        chosen = callbacks.within_epoch if inside else callbacks.ordered
        result = model.fit(
            batches,
            epochs=call.epochs,
            steps_per_epoch=call.steps_per_epoch,
            initial_epoch=call.initial_epoch,
            callbacks=[*chosen, meter] if meter else chosen,
            verbose=config.train.verbose,
            shuffle=False,  # the data shuffles itself; Keras warns it ignores shuffle=True
        )
        callbacks.metrics_csv.append = True  # the next call continues the same file
        for key, values in result.history.items():
            history.setdefault(key, []).extend(values)
        if model.stop_training:  # a signal, or a time budget's plan revised
            return


def _init_weights_record(spec: str | None) -> str | None:
    """`model.init_weights` for the summary: a file as an absolute path."""
    if spec in (None, IMAGENET):
        return spec
    return str(Path(spec).expanduser().resolve())


def _knn_monitor(config: Config, run: RunDirectory) -> list[KnnMonitor]:
    """The kNN monitor, when the config asks for one and data.val_source has labels."""
    if not config.eval.knn_every_epochs or not config.data.val_source:
        return []
    bank, queries = (
        source_from_config(config, config.data.val_source, split)
        for split in (config.eval.train_split, config.data.val_split)
    )
    if not (bank.has_labels and queries.has_labels):
        log.warning("kNN monitor off: %s has no labels", config.data.val_source)
        return []
    return [
        KnnMonitor.from_sources(
            bank,
            queries,
            max_bank=config.eval.knn_max_train,
            seed=config.train.seed,
            transform=EvalTransform.from_config(config),
            every_epochs=config.eval.knn_every_epochs,
            k=config.eval.knn_k,
            temperature=config.eval.knn_temperature,
            batch_size=config.eval.batch_size,
            log_dir=run.logs_dir,
        )
    ]


def _steps_per_epoch(config: Config, source: ImageSource) -> int:
    full_epoch = source.num_examples // config.train.batch_size
    if full_epoch == 0:
        raise UsageError(
            f"train.batch_size: {config.train.batch_size} is larger than the "
            f"{source.num_examples} training images in {config.data.source}"
        )
    if config.train.steps_per_epoch is not None:
        return min(config.train.steps_per_epoch, full_epoch)
    return full_epoch


def _seed_everything(seed: int, deterministic: bool) -> None:
    keras.utils.set_random_seed(seed)  # Python, NumPy and TensorFlow generators
    if deterministic:
        tf.config.experimental.enable_op_determinism()
        # KerasCV's layers ask for TensorFlow's global generator, which op
        # determinism refuses to create implicitly: give it a seeded one.
        tf.random.set_global_generator(tf.random.Generator.from_seed(seed))
