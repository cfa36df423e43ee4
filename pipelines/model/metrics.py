"""Test-set metrics, the trivial baseline beside them, and which way each metric improves.

The metrics that are means over rows (accuracy, log loss, MAE, RMSE, MAPE) are defined once,
row by row, in `row_terms`: the reports and the promotion gate's paired bootstrap both use it,
so the gate compares exactly the numbers the reports show.
"""

from __future__ import annotations

from typing import cast

import numpy as np

from pipelines.metric_names import METRIC_DIRECTIONS


def better(metric: str, value: float, reference: float) -> bool:
    """True when `value` is strictly better than `reference` for `metric`."""
    if METRIC_DIRECTIONS[metric] == "max":
        return value > reference
    return value < reference


PROBABILITY_FLOOR = 1e-7  # log loss: probabilities are clipped to [1e-7, 1], then renormalised
ROW_METRICS = ("accuracy", "log_loss", "mae", "rmse", "mape")


def row_terms(metric: str, y: np.ndarray, outputs: np.ndarray) -> np.ndarray:
    """Per-row values whose mean is `metric` (`aggregate` finishes it).

    - accuracy: 1 where the most probable class is the label.
    - log loss: -log of the label's probability, after clipping each row's probabilities to
      [1e-7, 1] and renormalising the row to sum to 1 (so a confident miss costs at most
      about 16, never infinity).
    - MAE, RMSE: the absolute and the squared error, in original units.
    - MAPE: 100 |error| / |target|, in percent. A row whose target is 0 has no percentage
      error: its term is NaN and the mean leaves it out (all-zero targets give NaN).
    """
    y = np.asarray(y)
    outputs = np.asarray(outputs, dtype="float64")
    if metric == "accuracy":
        return cast(np.ndarray, (outputs.argmax(axis=1) == y).astype("float64"))
    if metric == "log_loss":
        clipped = np.clip(outputs, PROBABILITY_FLOOR, 1.0)
        clipped = clipped / clipped.sum(axis=1, keepdims=True)
        return cast(np.ndarray, -np.log(clipped[np.arange(len(y)), y.astype(int)]))
    error: np.ndarray = outputs.ravel() - y.astype("float64").ravel()
    if metric == "mae":
        return cast(np.ndarray, np.abs(error))
    if metric == "rmse":
        return error**2
    if metric == "mape":
        target = np.abs(y.astype("float64").ravel())
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(target > 0, 100 * np.abs(error) / target, np.nan)
    raise ValueError(f"{metric!r} is not a mean over rows (those are: {', '.join(ROW_METRICS)})")


def aggregate(metric: str, terms: np.ndarray, axis: int | None = None) -> np.ndarray:
    """The metric from its row terms: their mean (rows with an undefined term left out), and
    for RMSE its square root."""
    with np.errstate(invalid="ignore"):
        means = np.nanmean(terms, axis=axis) if np.isnan(terms).any() else terms.mean(axis=axis)
    return cast(np.ndarray, np.sqrt(means) if metric == "rmse" else means)


def row_metric(metric: str, y: np.ndarray, outputs: np.ndarray) -> float:
    return float(aggregate(metric, row_terms(metric, y, outputs)))


def classification_metrics(y_true: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """Accuracy, ROC AUC, F1 and log loss from class probabilities of shape (n, n_classes).

    Binary problems use the positive-class F1 and ROC AUC; multi-class ones use macro F1 and
    one-vs-rest macro ROC AUC.
    """
    from sklearn import metrics as skm

    n_classes = proba.shape[1]
    labels = np.arange(n_classes)
    y_pred = proba.argmax(axis=1)
    if n_classes == 2:
        auc = skm.roc_auc_score(y_true, proba[:, 1])
        f1 = skm.f1_score(y_true, y_pred, average="binary")
    else:
        auc = skm.roc_auc_score(y_true, proba, multi_class="ovr", average="macro", labels=labels)
        f1 = skm.f1_score(y_true, y_pred, average="macro", labels=labels)
    return {
        "accuracy": row_metric("accuracy", y_true, proba),
        "roc_auc": float(auc),
        "f1": float(f1),
        "log_loss": row_metric("log_loss", y_true, proba),
    }


def majority_baseline(class_counts: np.ndarray, n_rows: int) -> np.ndarray:
    """Probabilities of the majority-class baseline: the training class frequencies
    (`class_counts`, one per class index) for every row, so its accuracy is the majority share
    and its ROC AUC is 0.5."""
    prior = np.asarray(class_counts, dtype="float64")
    prior = prior / prior.sum()
    return np.tile(prior, (n_rows, 1))


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """MAE, RMSE (original units) and MAPE (percent; see `row_terms`)."""
    y_true, y_pred = np.ravel(y_true), np.ravel(y_pred)
    return {metric: row_metric(metric, y_true, y_pred) for metric in ("mae", "rmse", "mape")}


def persistence_forecast(windows: np.ndarray) -> np.ndarray:
    """Tomorrow equals today: the last value of each window (n, steps, 1)."""
    return windows[:, -1, 0]


def seasonal_naive_forecast(windows: np.ndarray, season: int) -> np.ndarray:
    """The value one season before the target: `season` steps back from it."""
    return windows[:, -season, 0]
