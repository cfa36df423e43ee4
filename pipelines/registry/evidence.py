"""What a registration decides on, read from the train, evaluate and split outputs: the
metrics, the curves, the compared test rows and the new model's predictions on them, and the
metadata every registered version carries."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipelines.data.preprocessing import (
    SPEC_FILE,
    Preprocessing,
    encode_labels,
    raw_inputs,
    split_shards_of,
)
from pipelines.data.streaming import take_rows
from pipelines.model.evaluation import METRICS_FILE, PREDICTIONS_FILE
from pipelines.model.training import HISTORY_FILE, TRAINING_FILE

_INPUTS = {
    "tabular": "raw feature rows, shape (n, features), columns in the order of `features`",
    "images": "raw pixel arrays, shape (n, height, width), values as in the source data",
    "sequence": "raw windows, shape (n, window, 1), oldest value first, in original units",
    "text": "raw strings, shape (n,): one document each, as written (the model standardizes)",
}
_OUTPUTS = {
    "classification": "class probabilities, shape (n, classes), in the order of `classes`",
    "regression": "the next value, shape (n, 1), in original units",
}


def model_metadata(name: str, problem: str, prep: Preprocessing) -> dict[str, Any]:
    """What a caller needs to use the model: it travels with every registered version."""
    return {
        "model_name": name,
        "problem": problem,
        "modality": prep.modality,
        "input": _INPUTS[prep.modality],
        "input_shape": prep.input_shape,
        "features": prep.features,
        "label": prep.label,
        "classes": prep.classes,
        "output": _OUTPUTS[prep.task_type],
    }


COMPARE_ROWS = 100_000  # test rows a sharded dataset's champion comparison uses


def comparison_rows(
    data_dir: Path, prep: Preprocessing, seed: int
) -> tuple[np.ndarray | None, pd.DataFrame]:
    """The test rows the champion is compared on: (positions in the test split or None for
    all, the rows as a table of raw feature columns and the label, with the key or time
    column where the split has one). A sharded split gives a seeded sample of `COMPARE_ROWS`."""
    if not prep.sharded:
        return None, pd.read_parquet(Path(data_dir) / "test.parquet")
    total = prep.rows["test"]
    rng = np.random.default_rng(seed)
    positions = np.sort(rng.choice(total, size=min(total, COMPARE_ROWS), replace=False))
    x, labels = take_rows(split_shards_of(data_dir, "test"), prep.features, prep.label, positions)
    table = pd.DataFrame(x, columns=prep.features)
    table[prep.label] = labels
    return positions, table


@dataclass(frozen=True)
class Evidence:
    """What a registration decides on, read from the train, evaluate and split outputs."""

    metrics: dict[str, Any]
    summary: dict[str, Any]
    history: pd.DataFrame
    prep: Preprocessing
    positions: np.ndarray | None  # the compared test rows (None: all of them)
    table: pd.DataFrame  # those rows
    x_test: np.ndarray
    y_test: np.ndarray
    predictions: np.ndarray  # the new model's, on the compared rows


def collect_evidence(model_dir: Path, eval_dir: Path, data_dir: Path, seed: int) -> Evidence:
    metrics = json.loads((eval_dir / METRICS_FILE).read_text())
    summary = json.loads((model_dir / TRAINING_FILE).read_text())
    history = pd.read_csv(model_dir / HISTORY_FILE)
    prep = Preprocessing.load(data_dir / SPEC_FILE)
    positions, table = comparison_rows(data_dir, prep, seed)
    x_test = raw_inputs(table, prep.features, prep.input_shape)
    y_test = encode_labels(table[prep.label].to_numpy(), prep)
    if positions is None:
        predictions = np.load(eval_dir / PREDICTIONS_FILE)
    else:  # read only the sampled rows' predictions
        predictions = np.asarray(np.load(eval_dir / PREDICTIONS_FILE, mmap_mode="r")[positions])
    return Evidence(metrics, summary, history, prep, positions, table, x_test, y_test, predictions)
