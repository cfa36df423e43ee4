"""Test-set metrics, the trivial baseline beside them, and which way each metric improves."""

from __future__ import annotations

import numpy as np

from pipelines.config import METRIC_DIRECTIONS


def better(metric: str, value: float, reference: float) -> bool:
    """True when `value` is strictly better than `reference` for `metric`."""
    if METRIC_DIRECTIONS[metric] == "max":
        return value > reference
    return value < reference


def classification_metrics(y_true: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """Accuracy, ROC AUC, F1 and log loss from class probabilities of shape (n, n_classes).

    Binary problems use the positive-class F1 and ROC AUC; multi-class ones use macro F1 and
    one-vs-rest macro ROC AUC.
    """
    from sklearn import metrics as skm

    n_classes = proba.shape[1]
    labels = np.arange(n_classes)
    y_pred = proba.argmax(axis=1)
    clipped = np.clip(proba, 1e-7, 1.0)
    clipped = clipped / clipped.sum(axis=1, keepdims=True)
    if n_classes == 2:
        auc = skm.roc_auc_score(y_true, proba[:, 1])
        f1 = skm.f1_score(y_true, y_pred, average="binary")
    else:
        auc = skm.roc_auc_score(y_true, proba, multi_class="ovr", average="macro", labels=labels)
        f1 = skm.f1_score(y_true, y_pred, average="macro", labels=labels)
    return {
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "roc_auc": float(auc),
        "f1": float(f1),
        "log_loss": float(skm.log_loss(y_true, clipped, labels=labels)),
    }


def majority_baseline(class_counts: np.ndarray, n_rows: int) -> np.ndarray:
    """Probabilities of the majority-class baseline: the training class frequencies
    (`class_counts`, one per class index) for every row, so its accuracy is the majority share
    and its ROC AUC is 0.5."""
    prior = np.asarray(class_counts, dtype="float64")
    prior = prior / prior.sum()
    return np.tile(prior, (n_rows, 1))


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """MAE, RMSE (original units) and MAPE (percent)."""
    y_true, y_pred = np.ravel(y_true), np.ravel(y_pred)
    error = y_pred - y_true
    return {
        "mae": float(np.mean(np.abs(error))),
        "rmse": float(np.sqrt(np.mean(error**2))),
        "mape": float(100 * np.mean(np.abs(error) / np.abs(y_true))),
    }


def persistence_forecast(windows: np.ndarray) -> np.ndarray:
    """Tomorrow equals today: the last value of each window (n, steps, 1)."""
    return windows[:, -1, 0]


def seasonal_naive_forecast(windows: np.ndarray, season: int) -> np.ndarray:
    """The value one season before the target: `season` steps back from it."""
    return windows[:, -season, 0]
