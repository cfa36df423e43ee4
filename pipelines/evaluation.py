"""Score a trained model on the held-out test split, next to the trivial baseline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pipelines.metrics import classification_metrics, majority_baseline
from pipelines.preprocessing import SPEC_FILE, Preprocessing, load_split

METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "test_predictions.npy"
CONFUSION_FILE = "confusion_matrix.png"


def load_keras_model(path: Path):
    """Load a `.keras` file in safe mode (no code from the file is ever run)."""
    import keras

    return keras.saving.load_model(path, safe_mode=True)


def plot_confusion_matrix(
    y_true: np.ndarray, y_pred: np.ndarray, classes: list, title: str, out: Path
) -> np.ndarray:
    """Write a labelled confusion-matrix PNG and return the matrix."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import confusion_matrix

    cm = confusion_matrix(y_true, y_pred, labels=np.arange(len(classes)))
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


def evaluate_task(task: str, model_path: Path, data_dir: Path, out_dir: Path) -> dict:
    """Write test metrics (and the baseline's) to `metrics.json`, the raw-input test predictions
    and a confusion-matrix image to `out_dir`; return the metrics."""
    prep = Preprocessing.load(data_dir / SPEC_FILE)
    x_test, y_test = load_split(data_dir, "test", prep)
    _, y_train = load_split(data_dir, "train", prep)
    model = load_keras_model(model_path)
    proba = np.asarray(model.predict(x_test, verbose=0), dtype="float64")
    baseline = majority_baseline(y_train, len(y_test), len(prep.classes))
    metrics = {
        "test": classification_metrics(y_test, proba),
        "baseline": classification_metrics(y_test, baseline),
        "test_rows": len(y_test),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    np.save(out_dir / PREDICTIONS_FILE, proba)
    plot_confusion_matrix(
        y_test,
        proba.argmax(axis=1),
        prep.classes,
        f"{task}: test confusion matrix",
        out_dir / CONFUSION_FILE,
    )
    (out_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
    shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics["test"].items())
    print(f"{task} test: {shown} (baseline accuracy {metrics['baseline']['accuracy']:.4f})")
    return metrics
