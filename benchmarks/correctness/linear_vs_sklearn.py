"""The hand-written linear probe against scikit-learn's `LogisticRegression`: accuracy and time.

Until issue 31, `evaluation/linear.py` minimised the mean cross-entropy plus
(l2 / 2)·‖W‖² on standardised features with SciPy's L-BFGS-B (`hand_written`
below, its code), which is the objective of `LogisticRegression(C=1 / (l2 · n_train))`
(lbfgs, multinomial, bias unpenalised), what the probe calls now. Both fit the same
standardised features at each l2 of `L2_GRID`, with the same gradient tolerance and
iteration cap; the record holds the test accuracy, the objective reached and the
median seconds of `--repeats` fits for each, on two feature sets of digits: the 64 raw
pixels, and 512 random ReLU features of them (a backbone's width).

```
python benchmarks/correctness/linear_vs_sklearn.py --repeats 3
```
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_softmax
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for harness.py
from harness import Record, add_record_option  # noqa: E402

from byol_keras.evaluation.linear import L2_GRID  # noqa: E402

GTOL, MAX_ITER = 1e-6, 1000


def feature_sets() -> dict[str, tuple]:
    """(train, test, train labels, test labels) of digits, standardised on train."""
    images, labels = load_digits(return_X_y=True)
    train, test, y_train, y_test = train_test_split(
        images, labels, test_size=0.2, stratify=labels, random_state=0
    )
    projection = np.random.default_rng(0).normal(size=(64, 512)) / 8.0
    sets = {}
    for name, lift in (("pixels_64", None), ("relu_512", projection)):
        a, b = (
            (train, test)
            if lift is None
            else (np.maximum(train @ lift, 0), np.maximum(test @ lift, 0))
        )
        mean, scale = a.mean(axis=0), a.std(axis=0)
        scale[scale == 0] = 1.0
        sets[name] = ((a - mean) / scale, (b - mean) / scale, y_train, y_test)
    return sets


def objective(features, labels, weights, bias, l2) -> float:
    log_p = log_softmax(features @ weights + bias, axis=1)
    return float(-log_p[np.arange(len(labels)), labels].mean() + 0.5 * l2 * np.sum(weights**2))


def hand_written(features, labels, l2, num_classes=10):
    """The probe's fit before issue 31: the softmax objective and its gradient, SciPy's L-BFGS-B."""
    count, dim = features.shape
    one_hot = np.eye(num_classes)[labels]

    def objective_and_gradient(parameters):
        weights = parameters[: dim * num_classes].reshape(dim, num_classes)
        bias = parameters[dim * num_classes :]
        log_probabilities = log_softmax(features @ weights + bias, axis=1)
        loss = -np.sum(one_hot * log_probabilities) / count + 0.5 * l2 * np.sum(weights**2)
        residual = (np.exp(log_probabilities) - one_hot) / count
        gradient_weights = features.T @ residual + l2 * weights
        return loss, np.concatenate([gradient_weights.ravel(), residual.sum(axis=0)])

    start = np.zeros(dim * num_classes + num_classes)
    with threadpool_limits(limits=1, user_api="blas"):
        result = minimize(
            objective_and_gradient,
            start,
            jac=True,
            method="L-BFGS-B",
            options={"maxiter": MAX_ITER, "gtol": GTOL},
        )
    weights = result.x[: dim * num_classes].reshape(dim, num_classes)
    return weights, result.x[dim * num_classes :], int(result.nit)


def sklearn_fit(train, labels, l2):
    model = LogisticRegression(C=1.0 / (l2 * len(train)), tol=GTOL, max_iter=MAX_ITER)
    with threadpool_limits(limits=1, user_api="blas"):
        model.fit(train, labels)
    return model.coef_.T, model.intercept_, int(model.n_iter_[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    add_record_option(parser)
    args = parser.parse_args()
    run = Record("linear_vs_sklearn", args.record)
    figures = {}
    for name, (train, test, y_train, y_test) in feature_sets().items():
        for l2 in L2_GRID:
            row = {}
            for arm, fit in (("hand_written", hand_written), ("sklearn", sklearn_fit)):
                seconds = []
                for _ in range(args.repeats):
                    started = time.perf_counter()
                    weights, bias, iterations = fit(train, y_train, l2)
                    seconds.append(time.perf_counter() - started)
                accuracy = float(np.mean((test @ weights + bias).argmax(axis=1) == y_test))
                row[arm] = {
                    "test_top1": round(accuracy, 4),
                    "objective": objective(train, y_train, weights, bias, l2),
                    "iterations": iterations,
                    "median_s": round(statistics.median(seconds), 4),
                }
            figures[f"{name}/l2={l2:g}"] = row
            print(name, f"l2={l2:g}", row, flush=True)
    run.write(**figures)


if __name__ == "__main__":
    main()
