"""Score a trained model on the held-out test split, next to the trivial baseline."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipelines.data.preprocessing import (
    SPEC_FILE,
    Preprocessing,
    encode_labels,
    load_split,
    split_shards_of,
)
from pipelines.data.streaming import label_counts, predict_shards
from pipelines.metric_names import SHORT_FORMS
from pipelines.model.metrics import (
    classification_metrics,
    majority_baseline,
    persistence_forecast,
    regression_metrics,
    seasonal_naive_forecast,
)

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "test_predictions.npy"
PLOT_FILE = "test_plot.png"  # confusion matrix or forecast


def load_keras_model(path: Path) -> Any:
    """Load a `.keras` file in safe mode (no code from the file is ever run)."""
    import keras

    return keras.saving.load_model(path, safe_mode=True)


def plot_confusion_matrix(
    y_true: np.ndarray, y_pred: np.ndarray, classes: list[Any], title: str, out: Path
) -> np.ndarray:
    """Write a labelled confusion-matrix PNG and return the matrix."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import confusion_matrix

    cm: np.ndarray = confusion_matrix(y_true, y_pred, labels=np.arange(len(classes)))
    fig, ax = plt.subplots(figsize=(1.2 + 0.6 * len(classes), 1.0 + 0.6 * len(classes)))
    ax.imshow(cm, cmap="Blues")
    ticks = np.arange(len(classes))
    ax.set_xticks(ticks, [str(c) for c in classes])
    ax.set_yticks(ticks, [str(c) for c in classes])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(
                j,
                i,
                str(cm[i, j]),
                ha="center",
                va="center",
                color="white" if cm[i, j] > cm.max() / 2 else "black",
            )
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return cm


def plot_forecast(
    times: np.ndarray,
    actual: np.ndarray,
    predicted: np.ndarray,
    persistence: np.ndarray,
    title: str,
    unit: str,
    out: Path,
) -> None:
    """Test-span forecast against the actual series, with the persistence baseline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(10, 6), sharex=True, gridspec_kw={"height_ratios": [2, 1]}
    )
    top.plot(times, actual, color="black", linewidth=1, label="actual")
    top.plot(times, predicted, color="tab:blue", linewidth=1, label="model")
    top.set_ylabel(unit)
    top.set_title(title)
    top.legend()
    bottom.plot(
        times, np.abs(predicted - actual), color="tab:blue", linewidth=0.8, label="model |error|"
    )
    bottom.plot(
        times,
        np.abs(persistence - actual),
        color="tab:gray",
        linewidth=0.8,
        alpha=0.7,
        label="persistence |error|",
    )
    bottom.set_ylabel(f"|error| ({unit})")
    bottom.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def _train_class_counts(data_dir: Path, prep: Preprocessing) -> np.ndarray:
    """Rows per class index in the training split (only the label column is read)."""
    if prep.sharded:
        counts = label_counts(split_shards_of(data_dir, "train"), prep.label)
        return np.array([counts.get(c, 0) for c in prep.classes])
    _, y_train = load_split(data_dir, "train", prep)
    return np.bincount(y_train, minlength=len(prep.classes))


def predict_inputs(model: Any, x: np.ndarray) -> np.ndarray:
    """The model's outputs (float64) on raw inputs held in memory. Strings go in batches of
    32, as `predict` would batch numbers (and as the served model scores a small request)."""
    if x.dtype.kind in "USO":
        parts = [model.predict_on_batch(x[i : i + 32]) for i in range(0, len(x), 32)]
        return np.asarray(np.concatenate(parts), dtype="float64")
    return np.asarray(model.predict(x, verbose=0), dtype="float64")


def predict_test(model: Any, data_dir: Path, prep: Preprocessing) -> tuple[np.ndarray, np.ndarray]:
    """(model outputs float64, targets) on the test split: in one call, or batch by batch
    from the shards of a sharded dataset."""
    if prep.sharded:
        shards = split_shards_of(data_dir, "test")
        outputs, labels = predict_shards(model.predict_on_batch, shards, prep.features, prep.label)
        return outputs, encode_labels(labels, prep)
    x_test, y_test = load_split(data_dir, "test", prep)
    return predict_inputs(model, x_test), y_test


def short_form(text: str, form: str) -> str:
    """A short form of a document, as users send one: its `headline` (the first line), its
    `lead` (the headline and first paragraph: up to the second blank line) or its first 50
    words (`words50`)."""
    if form == "headline":
        return text.split("\n", 1)[0]
    if form == "lead":
        return "\n\n".join(text.split("\n\n")[:2])
    if form == "words50":
        return " ".join(text.split()[:50])
    raise ValueError(f"unknown short form {form!r} (known: {', '.join(SHORT_FORMS)})")


def _short_forms(x: np.ndarray) -> dict[str, np.ndarray]:
    return {form: np.array([short_form(t, form) for t in x]) for form in SHORT_FORMS}


def _at_every_length(
    score: Callable[[np.ndarray], np.ndarray], y: np.ndarray, forms: dict[str, np.ndarray]
) -> dict[str, float]:
    """Accuracy and F1 of `score` (texts -> probabilities) on each short form, named
    `<metric>_<form>`."""
    found = {}
    for form, texts in forms.items():
        scored = classification_metrics(y, score(texts))
        found.update({f"{metric}_{form}": scored[metric] for metric in ("accuracy", "f1")})
    return found


def _tfidf_logreg(
    data_dir: Path, prep: Preprocessing, y_test: np.ndarray, forms: dict[str, np.ndarray]
) -> dict[str, float]:
    """TF-IDF (words and bigrams) with logistic regression, fitted on the training split,
    scored on the full test texts and on their short forms."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    x_train, y_train = load_split(data_dir, "train", prep)
    x_test, _ = load_split(data_dir, "test", prep)
    linear = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2),
        LogisticRegression(max_iter=2000, C=10.0),
    )
    linear.fit(x_train, y_train)
    return {
        **classification_metrics(y_test, linear.predict_proba(x_test)),
        **_at_every_length(linear.predict_proba, y_test, forms),
    }


def _evaluate_classifier(
    model_name: str, model: Any, data_dir: Path, prep: Preprocessing, out_dir: Path
) -> tuple[dict[str, Any], np.ndarray]:
    proba, y_test = predict_test(model, data_dir, prep)
    majority = majority_baseline(_train_class_counts(data_dir, prep), len(y_test))
    metrics: dict[str, Any] = {
        "test": classification_metrics(y_test, proba),
        "baselines": {"majority": classification_metrics(y_test, majority)},
        "test_rows": len(y_test),
    }
    if prep.modality == "text":
        # The same test documents cut short (headline, lead, first 50 words): what users send.
        forms = _short_forms(load_split(data_dir, "test", prep)[0])
        metrics["test"].update(_at_every_length(lambda t: predict_inputs(model, t), y_test, forms))
        majority_forms = _at_every_length(lambda t: majority[: len(t)], y_test, forms)
        metrics["baselines"]["majority"].update(majority_forms)
        # Not a gate: the classic strong linear model on the same split, to report the gap to.
        metrics["references"] = {"tfidf_logreg": _tfidf_logreg(data_dir, prep, y_test, forms)}
    plot_confusion_matrix(
        y_test,
        proba.argmax(axis=1),
        prep.classes,
        f"{model_name}: test confusion matrix",
        out_dir / PLOT_FILE,
    )
    return metrics, proba


def _evaluate_forecaster(
    model_name: str, model: Any, data_dir: Path, prep: Preprocessing, out_dir: Path
) -> tuple[dict[str, Any], np.ndarray]:
    # The windows themselves feed the baselines, so the split is read here (a series is never
    # sharded) rather than through `predict_test`.
    x_test, y_test = load_split(data_dir, "test", prep)
    forecast = predict_inputs(model, x_test)
    persistence = persistence_forecast(x_test)
    metrics = {
        "test": regression_metrics(y_test, forecast),
        "baselines": {
            "persistence": regression_metrics(y_test, persistence),
            "seasonal_naive": regression_metrics(
                y_test, seasonal_naive_forecast(x_test, prep.stats["season"])
            ),
        },
        "test_rows": len(y_test),
    }
    times = pd.read_parquet(data_dir / "test.parquet")[prep.time_column].to_numpy()
    plot_forecast(
        times,
        y_test,
        forecast.ravel(),
        persistence,
        f"{model_name}: one-step-ahead test forecast",
        prep.label,
        out_dir / PLOT_FILE,
    )
    return metrics, forecast


_EVALUATORS = {"classification": _evaluate_classifier, "regression": _evaluate_forecaster}


def evaluate_model(
    model_name: str, model_path: Path, data_dir: Path, out_dir: Path
) -> dict[str, Any]:
    """Write test metrics and the trivial baselines' to `metrics.json`, the model's raw-input
    test predictions and a picture (confusion matrix or forecast) to `out_dir`."""
    prep = Preprocessing.load(data_dir / SPEC_FILE)
    model = load_keras_model(model_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics, predictions = _EVALUATORS[prep.task_type](model_name, model, data_dir, prep, out_dir)
    np.save(out_dir / PREDICTIONS_FILE, predictions)
    (out_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
    shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics["test"].items())
    log.info(f"{model_name} test: {shown}")
    for name, values in metrics["baselines"].items():
        log.info(f"  baseline {name}: " + ", ".join(f"{k} {v:.4f}" for k, v in values.items()))
    return metrics
