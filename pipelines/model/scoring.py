"""A saved model's outputs on the test split: the one part of evaluation that needs TensorFlow.
`train` writes them beside the model (`test_outputs.npz`), so `evaluate` computes metrics,
baselines and plots from arrays without importing TensorFlow."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.data.preprocessing import (
    SPEC_FILE,
    Preprocessing,
    encode_labels,
    load_split,
    split_shards_of,
)
from pipelines.data.streaming import predict_shards
from pipelines.metric_names import SHORT_FORMS

OUTPUTS_FILE = "test_outputs.npz"  # "test": the outputs on the test split; text: each short form


def load_keras_model(path: Path) -> Any:
    """Load a `.keras` file in safe mode (no code from the file is ever run)."""
    import keras

    return keras.saving.load_model(path, safe_mode=True)


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


def short_forms(x: np.ndarray) -> dict[str, np.ndarray]:
    """Every short form of each document in `x`, by form."""
    return {form: np.array([short_form(t, form) for t in x]) for form in SHORT_FORMS}


def score_test(model: Any, data_dir: Path) -> dict[str, np.ndarray]:
    """`model`'s outputs (float64) on the test split in `data_dir`, under "test"; for a text
    model also on each short form of the test documents, under the form's name."""
    prep = Preprocessing.load(data_dir / SPEC_FILE)
    outputs = {"test": predict_test(model, data_dir, prep)[0]}
    if prep.modality == "text":
        texts = load_split(data_dir, "test", prep)[0]
        outputs.update({f: predict_inputs(model, t) for f, t in short_forms(texts).items()})
    return outputs


def write_test_outputs(model_path: Path, data_dir: Path, out: Path) -> None:
    """Score the model saved at `model_path` (loaded back, as evaluate and the registry see
    it) on the test split and write its outputs to `out` (`.npz`)."""
    outputs = score_test(load_keras_model(model_path), data_dir)
    tmp = out.with_name(f".{out.name}.tmp.npz")
    # As `np.savez` writes it, but with a fixed time on each entry: the same outputs give the
    # same bytes, so DVC sees a retrain that changed nothing as no change.
    with zipfile.ZipFile(tmp, "w") as archive:
        for name, array in outputs.items():
            entry = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with archive.open(entry, "w") as stream:
                np.lib.format.write_array(stream, np.asanyarray(array), allow_pickle=False)
    tmp.replace(out)


def read_test_outputs(path: Path) -> dict[str, np.ndarray]:
    """The outputs `write_test_outputs` wrote, by name."""
    with np.load(path) as stored:
        return {name: stored[name] for name in stored.files}
