"""Test metrics of a trained model next to the trivial baselines, with a picture, from its
outputs on the held-out test split (`scoring.py` computes those)."""

from __future__ import annotations

import json
import logging
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
from pipelines.data.streaming import iter_frames, label_counts
from pipelines.metric_names import SHORT_FORMS
from pipelines.model.metrics import (
    classification_metrics,
    majority_baseline,
    persistence_forecast,
    regression_metrics,
    seasonal_naive_forecast,
)
from pipelines.model.scoring import load_keras_model, read_test_outputs, score_test, short_forms

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "test_predictions.npy"
PLOT_FILE = "test_plot.png"  # confusion matrix or forecast


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


def _test_targets(data_dir: Path, prep: Preprocessing) -> np.ndarray:
    """The test split's targets, in the order `scoring.predict_test` scores its rows (only the
    label column of a sharded split is read)."""
    if prep.sharded:
        shards = split_shards_of(data_dir, "test")
        frames = [frame[prep.label].to_numpy() for _, frame in iter_frames(shards, [prep.label])]
        return encode_labels(np.concatenate(frames), prep)
    return load_split(data_dir, "test", prep)[1]


def _at_every_length(y: np.ndarray, outputs: dict[str, np.ndarray]) -> dict[str, float]:
    """Accuracy and F1 of the probabilities scored on each short form (`outputs[form]`),
    named `<metric>_<form>`."""
    found = {}
    for form in SHORT_FORMS:
        scored = classification_metrics(y, outputs[form])
        found.update({f"{metric}_{form}": scored[metric] for metric in ("accuracy", "f1")})
    return found


def _tfidf_logreg(
    data_dir: Path, prep: Preprocessing, y_test: np.ndarray, x_test: np.ndarray
) -> dict[str, float]:
    """TF-IDF (words and bigrams) with logistic regression, fitted on the training split,
    scored on the full test texts and on their short forms."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    x_train, y_train = load_split(data_dir, "train", prep)
    linear = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2),
        LogisticRegression(max_iter=2000, C=10.0),
    )
    linear.fit(x_train, y_train)
    scored = {form: linear.predict_proba(texts) for form, texts in short_forms(x_test).items()}
    return {
        **classification_metrics(y_test, linear.predict_proba(x_test)),
        **_at_every_length(y_test, scored),
    }


def _evaluate_classifier(
    model_name: str,
    outputs: dict[str, np.ndarray],
    data_dir: Path,
    prep: Preprocessing,
    out_dir: Path,
) -> tuple[dict[str, Any], np.ndarray]:
    proba, y_test = outputs["test"], _test_targets(data_dir, prep)
    _check_rows(outputs, len(y_test))
    majority = majority_baseline(_train_class_counts(data_dir, prep), len(y_test))
    metrics: dict[str, Any] = {
        "test": classification_metrics(y_test, proba),
        "baselines": {"majority": classification_metrics(y_test, majority)},
        "test_rows": len(y_test),
    }
    if prep.modality == "text":
        # The same test documents cut short (headline, lead, first 50 words): what users send.
        metrics["test"].update(_at_every_length(y_test, outputs))
        majority_forms = _at_every_length(y_test, dict.fromkeys(SHORT_FORMS, majority))
        metrics["baselines"]["majority"].update(majority_forms)
        # Not a gate: the classic strong linear model on the same split, to report the gap to.
        x_test = load_split(data_dir, "test", prep)[0]
        metrics["references"] = {"tfidf_logreg": _tfidf_logreg(data_dir, prep, y_test, x_test)}
    plot_confusion_matrix(
        y_test,
        proba.argmax(axis=1),
        prep.classes,
        f"{model_name}: test confusion matrix",
        out_dir / PLOT_FILE,
    )
    return metrics, proba


def _evaluate_forecaster(
    model_name: str,
    outputs: dict[str, np.ndarray],
    data_dir: Path,
    prep: Preprocessing,
    out_dir: Path,
) -> tuple[dict[str, Any], np.ndarray]:
    # The windows themselves feed the baselines (a series is never sharded).
    x_test, y_test = load_split(data_dir, "test", prep)
    forecast = outputs["test"]
    _check_rows(outputs, len(y_test))
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


def _check_rows(outputs: dict[str, np.ndarray], rows: int) -> None:
    """Outputs scored on another test split (a stale file) fail here, not as wrong metrics."""
    wrong = {name: len(values) for name, values in outputs.items() if len(values) != rows}
    if wrong:
        raise ValueError(
            f"the model's test outputs do not match the test split ({rows:,} rows): {wrong}; "
            "train again on this split (dvc repro runs train when the split changed)"
        )


_EVALUATORS = {"classification": _evaluate_classifier, "regression": _evaluate_forecaster}


def evaluate_outputs(
    model_name: str, outputs: dict[str, np.ndarray], data_dir: Path, out_dir: Path
) -> dict[str, Any]:
    """Write test metrics and the trivial baselines' to `metrics.json`, the model's raw-input
    test predictions and a picture (confusion matrix or forecast) to `out_dir`, from the
    model's outputs on the test split (`scoring.score_test`): no TensorFlow here."""
    prep = Preprocessing.load(data_dir / SPEC_FILE)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics, predictions = _EVALUATORS[prep.task_type](model_name, outputs, data_dir, prep, out_dir)
    np.save(out_dir / PREDICTIONS_FILE, predictions)
    (out_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
    shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics["test"].items())
    log.info(f"{model_name} test: {shown}")
    for name, values in metrics["baselines"].items():
        log.info(f"  baseline {name}: " + ", ".join(f"{k} {v:.4f}" for k, v in values.items()))
    return metrics


def evaluate_saved_outputs(
    model_name: str, outputs_file: Path, data_dir: Path, out_dir: Path
) -> dict[str, Any]:
    """`evaluate_outputs` on the outputs `train` wrote beside the model (`test_outputs.npz`)."""
    return evaluate_outputs(model_name, read_test_outputs(outputs_file), data_dir, out_dir)


def evaluate_model(
    model_name: str, model_path: Path, data_dir: Path, out_dir: Path
) -> dict[str, Any]:
    """Score the model saved at `model_path` on the test split, then `evaluate_outputs`: both
    halves in one process (a script with the model at hand; the stages split them)."""
    outputs = score_test(load_keras_model(model_path), data_dir)
    return evaluate_outputs(model_name, outputs, data_dir, out_dir)
