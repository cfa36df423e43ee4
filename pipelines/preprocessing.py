"""Split the validated data and fit the preprocessing that will live inside the model.

The split stage writes `train/validation/test.parquet` and `preprocessing.json`. The JSON is
the contract with the model builders: it names the features, the label classes in index order
and the statistics fitted on the training split only.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipelines.config import ConfigError, DatasetConfig
from pipelines.datasets import read_table

SPLITS = ("train", "validation", "test")
SPEC_FILE = "preprocessing.json"


@dataclass(frozen=True)
class Preprocessing:
    """What a model needs to know about its raw input, fitted on the training split."""

    modality: str
    features: list[str]
    label: str
    classes: list[Any]
    input_shape: list[int]
    stats: dict[str, Any] = field(default_factory=dict)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> Preprocessing:
        return cls(**json.loads(Path(path).read_text()))


@dataclass(frozen=True)
class Splits:
    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame


def stratified_split(
    df: pd.DataFrame, label: str, validation: float, test: float, seed: int
) -> Splits:
    """Seeded split that keeps the class proportions in each part."""
    from sklearn.model_selection import train_test_split

    rest, test_df = train_test_split(df, test_size=test, stratify=df[label], random_state=seed)
    val_share = validation / (1.0 - test)
    train_df, val_df = train_test_split(
        rest, test_size=val_share, stratify=rest[label], random_state=seed
    )
    return Splits(train_df.sort_index(), val_df.sort_index(), test_df.sort_index())


def fit_normalization(x_train: np.ndarray) -> dict[str, list[float]]:
    """Adapt a Keras `Normalization` layer on the training features and return its statistics."""
    import keras

    layer = keras.layers.Normalization(axis=-1)
    layer.adapt(x_train.astype("float32"))
    mean = np.asarray(layer.mean).reshape(-1)
    variance = np.asarray(layer.variance).reshape(-1)
    return {"mean": mean.astype(float).tolist(), "variance": variance.astype(float).tolist()}


def _tabular(splits: Splits, label: str) -> Preprocessing:
    features = [c for c in splits.train.columns if c != label]
    classes = sorted(pd.concat([splits.train, splits.validation, splits.test])[label].unique())
    return Preprocessing(
        modality="tabular",
        features=features,
        label=label,
        classes=[c.item() if hasattr(c, "item") else c for c in classes],
        input_shape=[len(features)],
        stats=fit_normalization(splits.train[features].to_numpy()),
    )


# One splitter and one preprocessing fit per modality.
_SPLITTERS = {"tabular": stratified_split}
_FITTERS = {"tabular": _tabular}


def split_and_fit(
    name: str, data_path: Path, dataset: DatasetConfig, seed: int, out_dir: Path
) -> Preprocessing:
    """Split the raw table, fit preprocessing on train only, and write both to `out_dir`."""
    if dataset.modality not in _SPLITTERS:
        raise ConfigError(
            f"datasets.{name}.modality: no splitter for {dataset.modality!r} "
            f"(available: {', '.join(_SPLITTERS)})"
        )
    df = read_table(data_path)
    if dataset.label not in df.columns:
        raise ConfigError(f"datasets.{name}.label: column {dataset.label!r} not in {data_path}")
    splits = _SPLITTERS[dataset.modality](
        df, dataset.label, dataset.split.validation, dataset.split.test, seed
    )
    prep = _FITTERS[dataset.modality](splits, dataset.label)
    out_dir.mkdir(parents=True, exist_ok=True)
    for part in SPLITS:
        getattr(splits, part).to_parquet(out_dir / f"{part}.parquet", index=False)
    prep.save(out_dir / SPEC_FILE)
    sizes = {part: len(getattr(splits, part)) for part in SPLITS}
    print(f"split {data_path.name}: {sizes}; preprocessing fitted on train only")
    return prep


def load_split(data_dir: Path, name: str, prep: Preprocessing) -> tuple[np.ndarray, np.ndarray]:
    """Raw features and class indices of one split."""
    df = pd.read_parquet(Path(data_dir) / f"{name}.parquet")
    x = df[prep.features].to_numpy(dtype="float64")
    index = {c: i for i, c in enumerate(prep.classes)}
    y = df[prep.label].map(index).to_numpy(dtype="int64")
    return x, y
