"""The weighted kNN classifier against a brute-force reference, and the training-time monitor."""

import csv
import importlib.util
import math
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

from byol_keras.evaluation.features import Embedder
from byol_keras.evaluation.knn import knn_class_scores, knn_top1
from byol_keras.evaluation.monitor import KnnMonitor


def brute_force_scores(bank, bank_labels, queries, num_classes, k, temperature):
    """InstDisc's weighted kNN written out with the full similarity matrix."""
    bank = bank / np.linalg.norm(bank, axis=1, keepdims=True)
    queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    similarity = queries @ bank.T
    scores = np.zeros([len(queries), num_classes])
    for row, sims in enumerate(similarity):
        nearest = np.argsort(-sims)[:k]
        for index in nearest:
            scores[row, bank_labels[index]] += np.exp(sims[index] / temperature)
    return scores


@pytest.mark.parametrize(
    ("k", "query_chunk", "bank_chunk"), [(5, 7, 13), (40, 64, 9), (500, 3, 50)]
)
def test_scores_match_brute_force_reference(k, query_chunk, bank_chunk):
    rng = np.random.default_rng(k)
    bank = rng.normal(size=(120, 16)).astype(np.float32)
    labels = rng.integers(0, 4, size=120)
    queries = rng.normal(size=(37, 16)).astype(np.float32)
    expected = brute_force_scores(bank, labels, queries, 4, min(k, 120), 0.1)
    scores = knn_class_scores(
        bank, labels, queries, 4, k=k, temperature=0.1, query_chunk=query_chunk,
        bank_chunk=bank_chunk,
    )  # fmt: skip
    np.testing.assert_allclose(scores, expected, rtol=2e-4)


def test_well_separated_clusters_are_classified_perfectly():
    rng = np.random.default_rng(0)
    centres = np.eye(8)[:5] * 10.0  # five orthogonal directions
    bank_labels = np.repeat(np.arange(5), 60)
    bank = centres[bank_labels] + rng.normal(scale=0.5, size=(300, 8))
    query_labels = np.repeat(np.arange(5), 20)
    queries = centres[query_labels] + rng.normal(scale=0.5, size=(100, 8))
    assert knn_top1(bank, bank_labels, queries, query_labels, 5, k=200, temperature=0.1) == 1.0


def test_bad_bank_is_refused():
    with pytest.raises(ValueError, match="bank labels"):
        knn_class_scores(np.ones([3, 2]), np.array([0, 1, 5]), np.ones([1, 2]), 3)
    with pytest.raises(ValueError, match="empty"):
        knn_class_scores(np.ones([0, 2]), np.array([], int), np.ones([1, 2]), 3)


def _labelled_images(count, seed):
    """Images whose class sets the brightness of one channel, so kNN can learn something."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, size=count).astype(np.int32)
    images = rng.integers(0, 60, size=(count, 16, 16, 3))
    images[np.arange(count), :, :, labels] += 180
    return images.astype(np.uint8), labels


def test_monitor_writes_column_before_csv_logger(tiny_byol, tmp_path):
    model = tiny_byol()
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    bank_images, bank_labels = _labelled_images(64, 1)
    query_images, query_labels = _labelled_images(40, 2)
    monitor = KnnMonitor(
        bank_images, bank_labels, query_images, query_labels, 3,
        every_epochs=2, k=10, log_dir=tmp_path / "logs",
    )  # fmt: skip
    train = tf.data.Dataset.from_tensor_slices(bank_images.astype(np.float32) / 255.0)
    pairs = train.batch(16).map(lambda x: (x, tf.image.flip_left_right(x))).repeat()
    csv_path = tmp_path / "metrics.csv"
    model.fit(
        pairs,
        epochs=3,
        steps_per_epoch=2,
        verbose=0,
        callbacks=[monitor, keras.callbacks.CSVLogger(str(csv_path))],
    )
    rows = list(csv.DictReader(csv_path.open()))
    values = [float(row["knn_top1"]) for row in rows]
    # Epoch 2 (every 2) and epoch 3 (the last) are measured; epoch 1 is not.
    assert math.isnan(values[0])
    assert [epoch for epoch, _ in monitor.history] == [2, 3]
    assert values[1:] == pytest.approx([accuracy for _, accuracy in monitor.history])

    # The last value is the kNN accuracy of the final weights, recomputed independently.
    embedder = Embedder(model.online_backbone)
    expected = knn_top1(
        embedder.embed(bank_images), bank_labels, embedder.embed(query_images), query_labels, 3, 10
    )
    assert values[-1] == pytest.approx(expected)
    if importlib.util.find_spec("tensorboard") is not None:
        assert list((tmp_path / "logs" / "knn").glob("events.out.tfevents.*"))


def test_monitor_bank_cap_keeps_a_seeded_random_subset():
    from byol_keras.data import load_source

    bank = load_source("digits", split="train", image_size=8)
    queries = load_source("digits", split="test", image_size=8)
    first = KnnMonitor.from_sources(bank, queries, max_bank=100, seed=3)
    again = KnnMonitor.from_sources(bank, queries, max_bank=100, seed=3)
    assert first.bank_images.shape == (100, 8, 8, 3)
    assert np.array_equal(first.bank_images, again.bank_images)
    # A random subset of a source sorted by nothing in particular still spans the classes.
    assert len(np.unique(first.bank_labels)) == 10
    assert len(first.query_labels) == queries.num_examples


def test_a_run_of_several_fit_calls_measures_at_its_final_epoch_only(tiny_byol):
    model = tiny_byol()
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    images, labels = _labelled_images(48, 3)
    monitor = KnnMonitor(images, labels, images, labels, 3, every_epochs=5, k=5)
    monitor.final_epoch = 3
    train = tf.data.Dataset.from_tensor_slices(images.astype(np.float32) / 255.0)
    pairs = train.batch(16).map(lambda x: (x, tf.image.flip_left_right(x))).repeat()
    # A resumed run: the rest of epoch 1 in one call, then epochs 2 and 3.
    for first, last in ((0, 1), (1, 3)):
        model.fit(
            pairs, initial_epoch=first, epochs=last, steps_per_epoch=1, verbose=0,
            shuffle=False, callbacks=[monitor],
        )  # fmt: skip
    # The first call's last epoch is not the run's: only the run's final epoch 3 is measured.
    assert [epoch for epoch, _ in monitor.history] == [3]


def test_the_monitor_cost_estimate_scales_one_timed_batch_and_block(tiny_byol, monkeypatch):
    import byol_keras.evaluation.monitor as monitor_module

    bank_images, bank_labels = _labelled_images(64, 1)
    query_images, query_labels = _labelled_images(40, 2)
    monitor = KnnMonitor(
        bank_images, bank_labels, query_images, query_labels, 3, k=10, batch_size=16
    )
    # A clock that advances 1 s a reading: the timed batch of 16 images and the kNN block
    # take 1 s each, so 64 + 40 images take 104 / 16 s and the single block 1 s.
    readings = iter(range(100))
    clock = types.SimpleNamespace(perf_counter=lambda: float(next(readings)))
    monkeypatch.setattr(monitor_module, "time", clock)
    assert monitor.estimate_seconds(tiny_byol().online_backbone) == pytest.approx(104 / 16 + 1)
