"""Retrieval: Recall@k and mAP@R against hand computations and a brute-force ranking, and the
`--protocol retrieval` evaluation."""

import json

import numpy as np
import pytest

from byol_keras.cli import main
from byol_keras.data import load_source
from byol_keras.evaluation import evaluate_run
from byol_keras.evaluation.features import source_arrays
from byol_keras.evaluation.knn import nearest_neighbours
from byol_keras.evaluation.retrieval import retrieval_figures, retrieval_per_query
from byol_keras.registration import load_model
from tests.helpers.export import make_finished_run


def brute_force(queries, query_labels, gallery, gallery_labels):
    """Recall@1, Recall@5 and AP@R per query from a full stable ranking, in float64."""
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    g = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
    order = np.argsort(-(q.astype(np.float64) @ g.T.astype(np.float64)), axis=1, kind="stable")
    recall_1, recall_5, ap = [], [], []
    for row, label in enumerate(query_labels):
        relevant = gallery_labels[order[row]] == label
        r = int(np.sum(gallery_labels == label))
        precisions = [relevant[: i + 1].mean() for i in range(r) if relevant[i]]
        recall_1.append(relevant[:1].any())
        recall_5.append(relevant[:5].any())
        ap.append(sum(precisions) / r)
    return np.array(recall_1), np.array(recall_5), np.array(ap)


def test_clustered_example_is_retrieved_perfectly():
    rng = np.random.default_rng(0)
    centres = np.eye(4)[:3] * 10.0
    gallery_labels = np.repeat([0, 1, 2], [5, 7, 3])
    query_labels = np.array([2, 0, 1, 1, 0])
    gallery = centres[gallery_labels] + rng.normal(0, 0.1, [15, 4])
    queries = centres[query_labels] + rng.normal(0, 0.1, [5, 4])

    figures = retrieval_figures(
        retrieval_per_query(queries, query_labels, gallery, gallery_labels),
        query_labels,
        ["a", "b", "c"],
    )

    assert figures["recall_at_1"] == 1.0
    assert figures["map_at_r"] == 1.0
    assert figures["per_class"]["c"] == {"recall_at_1": 1.0, "recall_at_5": 1.0, "map_at_r": 1.0}


def test_hand_computed_map_at_r_and_recall():
    # Gallery on the unit circle at 0, 10, ..., 40 degrees, labels alternating 0 1 0 1 0.
    angles = np.radians([0, 10, 20, 30, 40])
    gallery = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    gallery_labels = np.array([0, 1, 0, 1, 0])
    # Query at 0 degrees, class 0 (R = 3): ranked labels 0 1 0 -> AP@R = (1 + 2/3) / 3.
    # Query at 40 degrees, class 1 (R = 2): ranked labels 0 1 -> AP@R = (1/2) / 2.
    queries = gallery[[0, 4]] * np.array([[2.0], [0.5]])  # cosine ignores the length
    query_labels = np.array([0, 1])

    per_query = retrieval_per_query(queries, query_labels, gallery, gallery_labels)
    figures = retrieval_figures(per_query, query_labels, ["even", "odd"])

    np.testing.assert_allclose(per_query["map_at_r"], [5 / 9, 1 / 4])
    np.testing.assert_array_equal(per_query["recall_at_1"], [1, 0])
    np.testing.assert_array_equal(per_query["recall_at_5"], [1, 1])
    assert figures["map_at_r"] == pytest.approx((5 / 9 + 1 / 4) / 2)
    assert figures["recall_at_1"] == 0.5
    assert figures["per_class"]["odd"]["map_at_r"] == pytest.approx(1 / 4)


def test_chunked_search_equals_the_full_ranking_with_ties():
    rng = np.random.default_rng(1)
    # Axes and sums of two axes, scaled by powers of two: a few well separated cosines
    # (0, 1/2, 1/sqrt 2, 1),
    # each computed exactly alike, so many exact ties, broken towards the lower index.
    directions = np.concatenate([np.eye(4), np.eye(4) + np.roll(np.eye(4), 1, axis=1)])
    gallery = directions[rng.integers(0, 8, 60)] * rng.choice([1.0, 2.0, 4.0], [60, 1])
    queries = directions[rng.integers(0, 8, 23)] * rng.choice([1.0, 2.0, 4.0], [23, 1])
    gallery_labels = rng.integers(0, 4, 60)
    query_labels = rng.integers(0, 4, 23)

    small = retrieval_per_query(
        queries, query_labels, gallery, gallery_labels, query_chunk=4, gallery_chunk=7
    )
    whole = retrieval_per_query(
        queries, query_labels, gallery, gallery_labels, query_chunk=1000, gallery_chunk=1000
    )
    reference = brute_force(queries, query_labels, gallery, gallery_labels)

    for name in small:
        np.testing.assert_array_equal(small[name], whole[name])
    for name, expected in zip(("recall_at_1", "recall_at_5", "map_at_r"), reference, strict=True):
        np.testing.assert_allclose(whole[name], expected, err_msg=name)


def test_nearest_neighbours_rank_like_a_full_sort():
    rng = np.random.default_rng(2)
    gallery, queries = rng.normal(size=[50, 6]), rng.normal(size=[9, 6])
    similarity, index = nearest_neighbours(queries, gallery, 4, query_chunk=2, gallery_chunk=8)

    normed = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
    full = (queries / np.linalg.norm(queries, axis=1, keepdims=True)) @ normed.T
    np.testing.assert_array_equal(index, np.argsort(-full, axis=1)[:, :4])
    np.testing.assert_allclose(similarity, np.sort(full, axis=1)[:, ::-1][:, :4], atol=1e-5)


def test_a_query_class_missing_from_the_gallery_is_refused():
    with pytest.raises(ValueError, match="no gallery items"):
        retrieval_per_query(np.ones([1, 2]), [1], np.ones([2, 2]), [0, 0])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_finished_run(tmp_path_factory.mktemp("run"), image_size=8)


def test_retrieval_protocol_matches_a_brute_force_ranking(run, capsys):
    code = main(["evaluate", "--run", str(run.root), "--protocol", "retrieval", "--data", "digits"])
    line = capsys.readouterr().out.strip()

    assert code == 0
    assert line.startswith("retrieval (pretrained) on digits:test: Recall@1 ")
    result = json.loads((run.eval_dir / "retrieval@digits.json").read_text())
    backbone = load_model(run.backbone_path, compile=False)
    features = {}
    for split in ("train", "test"):
        images, labels = source_arrays(load_source("digits", split=split, image_size=8))
        features[split] = backbone.predict(images / 255.0, verbose=0), labels
    recall_1, recall_5, ap = brute_force(*features["test"], *features["train"])
    assert result["recall_at_1"] == pytest.approx(recall_1.mean(), abs=2 / len(ap))
    assert result["recall_at_5"] == pytest.approx(recall_5.mean(), abs=2 / len(ap))
    assert result["map_at_r"] == pytest.approx(ap.mean(), abs=1e-3)
    assert (result["n_train"], result["n_test"]) == (1437, 360)
    assert set(result["per_class"]) == {str(digit) for digit in range(10)}


def test_retrieval_random_baseline_writes_its_own_file(run):
    result = evaluate_run(run.root, "retrieval", data="digits", baseline="random")
    assert result["backbone"] == "random_init"
    assert json.loads((run.eval_dir / "retrieval-random@digits.json").read_text()) == result
