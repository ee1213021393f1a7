"""The linear probe: multinomial logistic regression on frozen, standardised features.

The protocol, stated once: features are standardised with the training
set's per-dimension mean and standard deviation; a softmax classifier (weights
and bias) minimises the mean cross-entropy plus (l2 / 2)·‖W‖² with L-BFGS
(scikit-learn's `LogisticRegression(C=1 / (l2 · n_train))`, float64, at most
`max_iter` iterations). When `l2` is not given it is chosen from `L2_GRID` by
accuracy on a seeded, stratified 10% of the training set held out for the
choice, and the classifier is then refitted on the whole training set, as in
the BYOL paper's transfer protocol ("regularisation chosen on a validation set").
"""

import warnings
from dataclasses import dataclass, field

import numpy as np
from scipy.special import softmax
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

L2_GRID = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2)
VALIDATION_FRACTION = 0.1


@dataclass
class LinearProbe:
    """A fitted probe: the standardisation, the classifier, and how `l2` was chosen."""

    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: np.ndarray
    l2: float
    iterations: int
    validation_accuracy: dict[str, float] = field(default_factory=dict)

    def scores(self, features: np.ndarray) -> np.ndarray:
        """Class probabilities [n, classes] of raw (unstandardised) features."""
        standardised = (np.asarray(features, np.float64) - self.mean) / self.scale
        return softmax(standardised @ self.weights + self.bias, axis=1)


def fit_linear_probe(
    features: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    l2: float | None = None,
    max_iter: int = 1000,
    seed: int = 0,
) -> LinearProbe:
    """Fits the linear probe on training features; chooses `l2` from `L2_GRID` when None.

    ```python
    rng = np.random.default_rng(0)
    train_labels = np.repeat([0, 1], 20)
    train_features = (rng.normal(size=(40, 4)) + 3 * train_labels[:, None]).astype("float32")
    probe = fit_linear_probe(train_features, train_labels, num_classes=2)
    predictions = probe.scores(train_features).argmax(axis=1)
    assert (predictions == train_labels).mean() > 0.9
    ```
    """
    features = np.asarray(features, np.float64)
    labels = np.asarray(labels, np.int64)
    mean = features.mean(axis=0)
    scale = features.std(axis=0)
    scale[scale == 0] = 1.0  # constant (e.g. dead ReLU) dimensions carry no information
    standardised = (features - mean) / scale
    validation_accuracy = {}
    if l2 is None:
        l2, validation_accuracy = _choose_l2(standardised, labels, num_classes, max_iter, seed)
    weights, bias, iterations = _fit_softmax(standardised, labels, num_classes, l2, max_iter)
    return LinearProbe(mean, scale, weights, bias, l2, iterations, validation_accuracy)


def _choose_l2(features, labels, num_classes, max_iter, seed) -> tuple[float, dict]:
    fit_rows, held_out = stratified_split(labels, VALIDATION_FRACTION, seed)
    accuracy = {}
    for l2 in L2_GRID:
        weights, bias, _ = _fit_softmax(
            features[fit_rows], labels[fit_rows], num_classes, l2, max_iter
        )
        predictions = (features[held_out] @ weights + bias).argmax(axis=1)
        accuracy[f"{l2:g}"] = float(np.mean(predictions == labels[held_out]))
    # The strongest regularisation among the best ones: ties favour the simpler model.
    best = max(accuracy.values())
    chosen = max(l2 for l2 in L2_GRID if accuracy[f"{l2:g}"] == best)
    return chosen, accuracy


def stratified_split(labels: np.ndarray, fraction: float, seed: int):
    """Indices (kept, held_out) with `fraction` of every class held out (at least one
    per class with two or more examples).

    ```python
    labels = np.repeat([0, 1], 50)
    kept, held_out = stratified_split(labels, 0.1, seed=0)
    assert np.bincount(labels[held_out]).tolist() == [5, 5]
    ```
    """
    rng = np.random.default_rng(seed)
    held_out = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if len(members) < 2:
            continue
        count = min(max(1, round(fraction * len(members))), len(members) - 1)
        held_out.extend(rng.choice(members, size=count, replace=False))
    held_out = np.sort(np.asarray(held_out, np.int64))
    kept = np.setdiff1d(np.arange(len(labels)), held_out)
    return kept, held_out


def _fit_softmax(features, labels, num_classes, l2, max_iter):
    """Weights [dim, classes], bias [classes] and L-BFGS iterations of the penalised softmax.

    scikit-learn's `LogisticRegression` minimises the same objective, as fast or
    faster than a hand-written one with the same accuracy and optimum
    (benchmarks/RESULTS.md, "The linear probe"). With two classes it fits one
    logistic regression, whose weight is the difference of the two softmax columns:
    the softmax penalty splits it in halves, hence C twice as large. A class absent
    from `labels` is never predicted.
    """
    classes = np.unique(labels)
    weights = np.zeros((features.shape[1], num_classes))
    bias = np.full(num_classes, -np.inf)
    if len(classes) == 1:
        bias[classes] = 0.0
        return weights, bias, 0
    scale = 2.0 if len(classes) == 2 else 1.0
    model = LogisticRegression(C=scale / (l2 * len(labels)), tol=1e-6, max_iter=max_iter)
    # One BLAS thread: these matrix products are thin, and multi-threaded
    # OpenBLAS on a busy machine made them far slower (seen, not benchmarked).
    with threadpool_limits(limits=1, user_api="blas"), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # max_iter is the user's cap
        model.fit(features, labels)
    coef, intercept = model.coef_, model.intercept_
    if len(classes) == 2:
        coef, intercept = (
            np.concatenate([-coef, coef]) / 2,
            np.concatenate([-intercept, intercept]) / 2,
        )
    weights[:, classes], bias[classes] = coef.T, intercept
    return weights, bias, int(model.n_iter_[0])
