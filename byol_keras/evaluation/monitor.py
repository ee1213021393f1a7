"""A callback that measures weighted-kNN top-1 accuracy during training.

Every `every_epochs` epochs it embeds a labelled memory bank and a labelled
query set with the online backbone (no augmentation, BatchNorm in inference
mode) and classifies the queries with `byol_keras.evaluation.knn`. The accuracy goes into
the epoch's `logs` as `knn_top1`, so the CSVLogger placed after it writes it
as a column, and into TensorBoard under `logs/knn`.
"""

import importlib.util
import logging
import math
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from byol_keras.augment.eval_transform import EvalTransform
from byol_keras.data.labelled import check_classes, check_disjoint
from byol_keras.evaluation.features import Embedder, source_arrays
from byol_keras.evaluation.knn import BANK_CHUNK, QUERY_CHUNK, knn_class_scores, knn_top1

METRIC = "knn_top1"
log = logging.getLogger(__name__)


class KnnMonitor(keras.callbacks.Callback):
    """Adds `knn_top1` (a fraction) to the logs every `every_epochs` epochs and at the last one.

    The last one is `final_epoch` (counted from 1) when set, as a run made of
    several `fit` calls sets it; otherwise the last epoch of each `fit` call.

    On epochs without a measurement the value is NaN, so the CSV column
    exists from the first row on (CSVLogger fixes its columns at the first
    epoch) and a reader never mistakes a stale value for a new one.
    TensorBoard gets only the measured points. Place it before CSVLogger in
    the callback list: callbacks see the same `logs` dict in list order.

    ```python
    # doctest: slow
    images, labels = source_arrays(load_source("digits", split="test", image_size=16))
    monitor = KnnMonitor(images[:200], labels[:200], images[200:], labels[200:], 10, every_epochs=1)
    model = BYOL(build_backbone("tiny", image_size=16, width=4))
    model.compile(optimizer="adam")
    source = load_source("digits", image_size=16)
    pairs = pair_dataset(source, make_augmenter("digits", image_size=16), 32)
    model.fit(pairs, epochs=1, steps_per_epoch=2,
              callbacks=[monitor, keras.callbacks.CSVLogger("m.csv")])
    ```
    """

    def __init__(
        self,
        bank_images: np.ndarray,
        bank_labels: np.ndarray,
        query_images: np.ndarray,
        query_labels: np.ndarray,
        num_classes: int,
        every_epochs: int = 1,
        k: int = 200,
        temperature: float = 0.1,
        batch_size: int = 512,
        log_dir: str | Path | None = None,
    ):
        super().__init__()
        if every_epochs < 1:
            raise ValueError(f"every_epochs must be >= 1, got {every_epochs}")
        self.bank_images, self.bank_labels = bank_images, np.asarray(bank_labels)
        self.query_images, self.query_labels = query_images, np.asarray(query_labels)
        self.num_classes = num_classes
        self.every_epochs = every_epochs
        self.k, self.temperature, self.batch_size = k, temperature, batch_size
        self.log_dir = log_dir
        self.history: list[tuple[int, float]] = []  # (epoch number from 1, top-1)
        self.seconds = 0.0  # time spent measuring, to check what the monitor costs
        self.final_epoch: int | None = None
        self._embedder: Embedder | None = None
        self._writer = None

    @classmethod
    def from_sources(
        cls,
        bank_source,
        query_source,
        max_bank: int | None = None,
        seed=0,
        transform: EvalTransform | None = None,
        **kw,
    ):
        """Reads the bank (capped at `max_bank`, a seeded random subset) and queries into memory.

        Each image goes through the evaluation `transform` (`source_arrays`),
        as in `byol-keras evaluate --protocol knn`.

        ```python
        monitor = KnnMonitor.from_sources(
            load_source("digits", split="train"), load_source("digits", split="test"),
            max_bank=500, transform=EvalTransform(16), every_epochs=5,
        )
        ```
        """
        check_disjoint(bank_source, query_source, "data.val_source")
        # Folder sources label loose files -1: they cannot vote or be scored.
        bank_images, bank_labels = source_arrays(
            bank_source, max_bank, seed, labelled_only=True, transform=transform
        )
        query_images, query_labels = source_arrays(
            query_source, labelled_only=True, transform=transform
        )
        check_classes(bank_labels, query_labels, bank_source.class_names, "data.val_source")
        num_classes = max(bank_source.num_classes or 0, query_source.num_classes or 0)
        return cls(bank_images, bank_labels, query_images, query_labels, num_classes, **kw)

    def measure(self) -> float:
        """kNN top-1 of the model's online backbone now."""
        embedder = self._embedder_for(self.model.online_backbone)
        bank = embedder.embed(self.bank_images)
        queries = embedder.embed(self.query_images)
        return knn_top1(
            bank,
            self.bank_labels,
            queries,
            self.query_labels,
            self.num_classes,
            k=self.k,
            temperature=self.temperature,
        )

    def estimate_seconds(self, backbone: keras.Model) -> float:
        """A generous estimate of what one measurement of `backbone` costs, in seconds.

        Embedding is timed on one batch of the bank (after a first pass that
        traces) and scaled to bank and queries; the vote is timed on one full
        block of similarities and scaled to the number of blocks, partial ones
        counted whole.
        """
        embedder = self._embedder_for(backbone)
        sample = self.bank_images[: self.batch_size]
        embedder.embed(sample)
        started = time.perf_counter()
        features = embedder.embed(sample)
        per_image = (time.perf_counter() - started) / len(sample)
        banked, queried = len(self.bank_images), len(self.query_images)
        rows = min(queried, QUERY_CHUNK), min(banked, BANK_CHUNK)
        started = time.perf_counter()
        knn_class_scores(
            np.resize(features, (rows[1], features.shape[1])),
            np.resize(self.bank_labels, rows[1]),
            np.resize(features, (rows[0], features.shape[1])),
            self.num_classes,
            k=self.k,
            temperature=self.temperature,
        )
        blocks = math.ceil(queried / QUERY_CHUNK) * math.ceil(banked / BANK_CHUNK)
        return per_image * (banked + queried) + (time.perf_counter() - started) * blocks

    def _embedder_for(self, backbone: keras.Model) -> Embedder:
        if self._embedder is None or self._embedder.backbone is not backbone:
            self._embedder = Embedder(backbone, self.batch_size)
        return self._embedder

    def on_epoch_end(self, epoch, logs=None) -> None:
        if logs is None:
            return
        last_epoch = epoch + 1 == (self.final_epoch or self.params.get("epochs"))
        if (epoch + 1) % self.every_epochs and not last_epoch:
            logs[METRIC] = math.nan
            return
        started = time.perf_counter()
        accuracy = self.measure()
        self.seconds += time.perf_counter() - started
        logs[METRIC] = accuracy
        self.history.append((epoch + 1, accuracy))
        if self.log_dir is not None and _tensorboard_installed():
            if self._writer is None:
                self._writer = tf.summary.create_file_writer(str(Path(self.log_dir) / "knn"))
            with self._writer.as_default():
                tf.summary.scalar(f"epoch_{METRIC}", accuracy, step=epoch)
            self._writer.flush()

    def on_train_end(self, logs=None) -> None:
        if self.history:
            log.info(
                "kNN monitor: %d measurement(s), %.1f s in all, last top-1 %.4f",
                len(self.history),
                self.seconds,
                self.history[-1][1],
            )
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _tensorboard_installed() -> bool:
    """tf.summary writes nothing without the tensorboard package; say so once, then go on."""
    if importlib.util.find_spec("tensorboard") is not None:
        return True
    if not getattr(_tensorboard_installed, "warned", False):
        log.warning("tensorboard is not installed: kNN accuracy goes to the CSV log only")
        _tensorboard_installed.warned = True
    return False
