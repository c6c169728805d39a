"""Baselines a model must beat ("always have a baseline"): the majority class and a linear
model (scikit-learn logistic regression on flattened, standardised pixels), on the same splits."""
from __future__ import annotations

import warnings

import numpy as np


def majority_accuracy(train_labels: np.ndarray, eval_labels: np.ndarray) -> float:
    """Accuracy of always predicting the training split's most frequent class."""
    majority = np.bincount(np.asarray(train_labels).ravel()).argmax()
    return float(np.mean(np.asarray(eval_labels).ravel() == majority))


def logistic_regression_accuracy(train_x: np.ndarray, train_y: np.ndarray, eval_x: np.ndarray,
                                 eval_y: np.ndarray, *, max_iter: int = 1000, seed: int = 0) -> float:
    """Accuracy of a multinomial logistic regression on flattened, standardised inputs (with a single
    training class, the constant prediction it would learn)."""
    if len(np.unique(np.asarray(train_y))) < 2:
        return majority_accuracy(train_y, eval_y)
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    flat = lambda x: np.asarray(x, np.float64).reshape(len(x), -1)  # noqa: E731
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter, random_state=seed))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(flat(train_x), np.asarray(train_y).ravel())
    return float(clf.score(flat(eval_x), np.asarray(eval_y).ravel()))


def baselines(train_x: np.ndarray, train_y: np.ndarray, eval_x: np.ndarray, eval_y: np.ndarray,
              seed: int = 0) -> dict[str, float]:
    """``{"majority", "logistic_regression", "accuracy"}``; ``accuracy`` is the better of the two."""
    out = {"majority": majority_accuracy(train_y, eval_y),
           "logistic_regression": logistic_regression_accuracy(train_x, train_y, eval_x, eval_y, seed=seed)}
    out["accuracy"] = max(out.values())
    return out
