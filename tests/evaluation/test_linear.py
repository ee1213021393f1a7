"""The linear probe's fit reaches the optimum of the penalised softmax objective it states."""

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.special import log_softmax, softmax

from byol_keras.evaluation.linear import fit_linear_probe


def reference_probabilities(features, labels, num_classes, l2):
    """Class probabilities at the minimum of mean CE + (l2 / 2)·‖W‖², on standardised features,
    found by SciPy's L-BFGS-B on the objective written out (the probe's code before issue 31)."""
    mean, scale = features.mean(axis=0), features.std(axis=0)
    scale[scale == 0] = 1.0
    x = (features - mean) / scale
    count, dim = x.shape
    one_hot = np.eye(num_classes)[labels]

    def objective(parameters):
        weights = parameters[: dim * num_classes].reshape(dim, num_classes)
        log_p = log_softmax(x @ weights + parameters[dim * num_classes :], axis=1)
        loss = -np.sum(one_hot * log_p) / count + 0.5 * l2 * np.sum(weights**2)
        residual = (np.exp(log_p) - one_hot) / count
        gradient = np.concatenate([(x.T @ residual + l2 * weights).ravel(), residual.sum(0)])
        return loss, gradient

    start = np.zeros(dim * num_classes + num_classes)
    found = minimize(objective, start, jac=True, method="L-BFGS-B", options={"gtol": 1e-9})
    weights = found.x[: dim * num_classes].reshape(dim, num_classes)
    return lambda test: softmax(((test - mean) / scale) @ weights + found.x[dim * num_classes :], 1)


@pytest.mark.parametrize(("num_classes", "present"), [(4, 4), (2, 2), (5, 3)])
def test_the_probe_reaches_the_penalised_softmax_optimum(num_classes, present):
    # Two classes fit one logistic regression, and a class absent from the labels
    # (a small label fraction) is never predicted: the optimum is the same.
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(present), 40)
    features = rng.normal(size=(len(labels), 6)) + labels[:, None] * rng.normal(size=6)
    test = rng.normal(size=(30, 6)) * 2
    l2 = 1e-2
    probe = fit_linear_probe(features, labels, num_classes, l2=l2, max_iter=1000)
    expected = reference_probabilities(features, labels, present, l2)(test)
    scores = probe.scores(test)
    assert scores.shape == (30, num_classes)
    np.testing.assert_allclose(scores[:, :present], expected, atol=1e-3)
    assert np.all(scores[:, present:] == 0)
