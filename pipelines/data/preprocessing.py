"""Split the validated data and fit the preprocessing that will live inside the model.

The split stage writes `train/validation/test.parquet` and `preprocessing.json` for every
modality. Each split is a table of raw feature columns plus the label (and the `split.key`
column, if one is named): measurements for tabular data, `pixel_<row>_<col>` values for images,
and for a series one row per forecast with the raw window (`t-52` ... `t-1`) and the target. The
JSON is the contract with the model builders: features, input shape, label classes in index
order, the statistics fitted on the training split only, and the split's identity. Which split
a row falls into is `pipelines.data.splitting`'s job.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd

from pipelines.dataset_config import DatasetConfig, ShardsConfig
from pipelines.data.datasets import PIXEL_PREFIX, image_shape, read_table
from pipelines.data.drift import (
    REFERENCE_FILE,
    drift_features,
    reference_profile,
    save_reference,
    training_vocabulary,
)
from pipelines.data.row_hashing import _time_digest, assign_splits, row_hashes, split_salt
from pipelines.data.series import fill_gaps, window_columns
from pipelines.data.splitting import (
    SPLITS,
    TEMPORAL_METHOD,
    Splits,
    check_class_shares,
    check_key,
    hash_identity,
    hash_split,
    method_line,
)
from pipelines.errors import ConfigError, DataError

log = logging.getLogger(__name__)

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
    task_type: str = "classification"
    time_column: str | None = None
    sharded: bool = False  # splits are folders of Parquet shards (pipelines.data.streaming)
    rows: dict[str, int] = field(default_factory=dict)  # rows per split
    split: dict[str, Any] = field(default_factory=dict)  # the split's identity (`splits_under`)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> Preprocessing:
        return cls(**json.loads(Path(path).read_text()))


def fit_normalization(x_train: np.ndarray) -> dict[str, list[float]]:
    """Per-feature mean and population variance of the training features (rows x features),
    the statistics a Keras `Normalization(axis=-1)` layer adapts. The model receives float32
    inputs, so the features are cast to float32 first; the sums run in float64. NumPy, not
    `adapt`: the split stage then does not import TensorFlow (about 4 s)."""
    from pipelines.data.streaming import Moments

    moments = Moments()
    moments.add(np.asarray(x_train).astype("float32"))
    return moments.result()


def _classes(splits: Splits, label: str) -> list[Any]:
    values = sorted(pd.concat([splits.train, splits.validation, splits.test])[label].unique())
    return [v.item() if hasattr(v, "item") else v for v in values]


def _tabular(df: pd.DataFrame, dataset: DatasetConfig, seed: int) -> tuple[Splits, Preprocessing]:
    features = [c for c in df.columns if c not in (dataset.label, dataset.split.key)]
    splits, identity = hash_split(df, features, dataset.split, seed)
    prep = Preprocessing(
        modality="tabular",
        features=features,
        label=dataset.label,
        classes=_classes(splits, dataset.label),
        input_shape=[len(features)],
        stats=fit_normalization(splits.train[features].to_numpy()),
        split=identity,
    )
    return splits, prep


def _images(df: pd.DataFrame, dataset: DatasetConfig, seed: int) -> tuple[Splits, Preprocessing]:
    features = [c for c in df.columns if c.startswith(PIXEL_PREFIX)]
    splits, identity = hash_split(df, features, dataset.split, seed)
    brightest = float(splits.train[features].to_numpy().max())
    if brightest <= 0:
        raise DataError("every training pixel is 0: nothing to learn from")
    prep = Preprocessing(
        modality="images",
        features=features,
        label=dataset.label,
        classes=_classes(splits, dataset.label),
        input_shape=list(image_shape(features)),
        stats={"scale": 1.0 / brightest},  # raw pixels -> [0, 1], fitted on train
        split=identity,
    )
    return splits, prep


def _sequence(df: pd.DataFrame, dataset: DatasetConfig, seed: int) -> tuple[Splits, Preprocessing]:
    del seed  # a temporal split is never shuffled
    cfg = dataset.series
    assert cfg is not None  # DatasetConfig requires it for sequences
    filled = fill_gaps(df, cfg.time_column, dataset.label, cfg.max_gap)
    values = filled[dataset.label].to_numpy("float64")
    n, window = len(values), cfg.window
    test_start = int(n * (1 - dataset.split.test))
    val_start = int(n * (1 - dataset.split.test - dataset.split.validation))
    if val_start < 3 * window:
        raise DataError(f"a series of {n} steps is too short for window {window}")
    targets = np.arange(window, n)
    windows = np.lib.stride_tricks.sliding_window_view(values, window)[:-1]
    table = pd.DataFrame(windows, columns=window_columns(window))
    table.insert(0, cfg.time_column, filled[cfg.time_column].to_numpy()[targets])
    table[dataset.label] = values[targets]
    splits = Splits(
        train=table[targets < val_start].reset_index(drop=True),
        validation=table[(targets >= val_start) & (targets < test_start)].reset_index(drop=True),
        test=table[targets >= test_start].reset_index(drop=True),
    )
    if not len(splits.validation) or not len(splits.test):
        raise DataError(f"a series of {n} steps leaves no validation or no test span")
    time = cfg.time_column
    identity = {
        "method": TEMPORAL_METHOD,
        "validation_start": str(splits.validation[time].iloc[0]),
        "test_start": str(splits.test[time].iloc[0]),
        "validation": dataset.split.validation,
        "test": dataset.split.test,
        "digests": {part: _time_digest(getattr(splits, part)[time]) for part in SPLITS},
    }
    prep = Preprocessing(
        modality="sequence",
        features=window_columns(window),
        label=dataset.label,
        classes=[],
        input_shape=[window, 1],
        # The model sees its window relative to the window's last value, in units of a typical
        # one-step change on the training span, and answers last value + predicted change.
        stats={"step_scale": float(np.std(np.diff(values[:val_start]))), "season": cfg.season},
        task_type="regression",
        time_column=cfg.time_column,
        split=identity,
    )
    return splits, prep


def _text(df: pd.DataFrame, dataset: DatasetConfig, seed: int) -> tuple[Splits, Preprocessing]:
    """Documents and their class. Exact duplicates (the same text once surrounding white space
    is stripped) are dropped before the split, keeping the first, so no text can be in both
    training and test; how many were dropped is printed and kept in `stats`. The split hashes
    the text with its white space normalised, so texts that differ only there share a split.
    The tokenizer is adapted on the training split inside the model
    (`pipelines.model.builders`)."""
    column = dataset.text
    if column not in df.columns:
        raise ConfigError(f"text column {column!r} not in the data (columns: {list(df.columns)})")
    kept = list(dict.fromkeys([column, dataset.label, *filter(None, [dataset.split.key])]))
    table = df[kept].reset_index(drop=True)
    duplicated = table[column].astype(str).str.strip().duplicated()
    if duplicated.any():
        log.info(f"dropped {int(duplicated.sum())} exact duplicate text(s) before the split")
    table = table[~duplicated.to_numpy()].reset_index(drop=True)
    splits, identity = hash_split(table, [column], dataset.split, seed, text=True)
    prep = Preprocessing(
        modality="text",
        features=[column],
        label=dataset.label,
        classes=_classes(splits, dataset.label),
        input_shape=[],  # one raw string per example
        stats={"duplicates_dropped": int(duplicated.sum())},
        split=identity,
    )
    return splits, prep


# One preparation (split + preprocessing fitted on train) per modality.
_PREPARERS = {"tabular": _tabular, "images": _images, "sequence": _sequence, "text": _text}


def split_shards(
    name: str, data_path: Path, dataset: DatasetConfig, seed: int, out_dir: Path
) -> Preprocessing:
    """The split of a sharded tabular dataset, in one streaming pass: every row goes to test,
    validation or train by its row hash (`row_hashes`, as for a table read whole; class shares
    are not checked, as sharded data is large enough for chance to keep them) and to a random
    (seeded) shard of that part. Normalization statistics, the label set, the drift reference
    (a seeded sample of train) and the split's digests (8 bytes a row held) are gathered in
    the same pass."""
    from pipelines.data import streaming

    shards = streaming.shard_paths(data_path)
    columns = streaming.columns_of(shards[0])
    if dataset.label not in columns:
        raise ConfigError(f"datasets.{name}.label: column {dataset.label!r} not in {data_path}")
    key = dataset.split.key
    features = [c for c in columns if c not in (dataset.label, key)]
    total = streaming.row_count(shards)
    shard_rows = (dataset.shards or ShardsConfig()).rows
    shares = {"test": dataset.split.test, "validation": dataset.split.validation}
    shares["train"] = 1.0 - shares["test"] - shares["validation"]
    writers = {
        part: streaming.ShardWriter(
            out_dir / f"{part}.parquet", math.ceil(total * shares[part] / shard_rows)
        )
        for part in SPLITS
    }
    rng = np.random.default_rng(seed)
    salt = split_salt(dataset.split, seed)
    hashes: dict[str, list[np.ndarray]] = {part: [] for part in SPLITS}
    moments, classes, sample = streaming.Moments(), set(), []
    sample_share = min(1.0, streaming.SAMPLE_ROWS / max(total * shares["train"], 1))
    try:
        for _, frame in streaming.iter_frames(shards):
            frame_hashes = row_hashes(frame, salt, features, key)
            parts = assign_splits(frame_hashes, dataset.split.validation, dataset.split.test)
            for part in ("test", "validation", "train"):
                writers[part].scatter(frame[parts == part], rng)
                hashes[part].append(frame_hashes[parts == part])
            train = frame[parts == "train"]
            moments.add(train[features].to_numpy("float32"))
            classes.update(frame[dataset.label].dropna().unique().tolist())
            sample.append(train[rng.random(len(train)) < sample_share])
        rows = {part: writers[part].rows for part in SPLITS}
        if min(rows.values()) == 0:
            raise DataError(f"{data_path}: {total} rows are too few to split: {rows}")
        for writer in writers.values():
            writer.close()
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    prep = Preprocessing(
        modality="tabular",
        features=features,
        label=dataset.label,
        classes=sorted(c.item() if hasattr(c, "item") else c for c in classes),
        input_shape=[len(features)],
        stats=moments.result(),
        sharded=True,
        rows=rows,
        split=hash_identity(
            salt, dataset.split, {part: np.concatenate(hashes[part]) for part in SPLITS}
        ),
    )
    prep.save(out_dir / SPEC_FILE)
    reference = drift_features(
        pd.concat(sample)[[*features, dataset.label]], "tabular", dataset.label
    )
    save_reference(reference_profile(reference), out_dir / REFERENCE_FILE)
    log.info(
        f"split {len(shards)} shard(s) of {data_path.name}: {rows}; "
        "preprocessing fitted on train only, streamed"
    )
    log.info(method_line(prep.split))
    return prep


def split_and_fit(
    name: str, data_path: Path, dataset: DatasetConfig, seed: int, out_dir: Path
) -> Preprocessing:
    """Split the raw table, fit preprocessing on train only, and write both to `out_dir`. The
    salt of a hash split is `split.salt`, or derived from `seed`; a classification split must
    meet its class shares (`_check_class_shares`)."""
    from pipelines.data.streaming import columns_of, is_sharded, shard_paths

    if is_sharded(data_path):
        check_key(name, dataset, columns_of(shard_paths(data_path)[0]), data_path)
        out_dir.mkdir(parents=True, exist_ok=True)
        return split_shards(name, data_path, dataset, seed, out_dir)
    df = read_table(data_path)
    if dataset.label not in df.columns:
        raise ConfigError(f"datasets.{name}.label: column {dataset.label!r} not in {data_path}")
    check_key(name, dataset, list(df.columns), data_path)
    splits, prep = _PREPARERS[dataset.modality](df, dataset, seed)
    if prep.task_type == "classification":
        check_class_shares(name, splits, prep.label, dataset.split)
    out_dir.mkdir(parents=True, exist_ok=True)
    for part in SPLITS:
        path = out_dir / f"{part}.parquet"
        if path.is_dir():  # the dataset used to be sharded
            shutil.rmtree(path)
        getattr(splits, part).to_parquet(path, index=False)
    prep.save(out_dir / SPEC_FILE)
    vocabulary = (
        training_vocabulary(splits.train[prep.features[0]]) if prep.modality == "text" else None
    )
    key = dataset.split.key
    reference = drift_features(  # the key is an identifier, not a feature to watch
        splits.train.drop(columns=[key]) if key else splits.train,
        dataset.modality,
        dataset.label,
        prep.time_column,
        vocabulary,
    )
    time_end = str(splits.train[prep.time_column].max()) if prep.time_column else None
    save_reference(reference_profile(reference, time_end, vocabulary), out_dir / REFERENCE_FILE)
    sizes = {part: len(getattr(splits, part)) for part in SPLITS}
    log.info(f"split {data_path.name}: {sizes}; preprocessing fitted on train only")
    log.info(method_line(prep.split))
    return prep


def encode_labels(values: np.ndarray, prep: Preprocessing) -> np.ndarray:
    """Targets as the model learns them: class indices for classification, values in original
    units for regression."""
    if prep.task_type == "regression":
        return np.asarray(values, dtype="float64")
    index = {c: i for i, c in enumerate(prep.classes)}
    labels: np.ndarray = pd.Series(values).map(index).to_numpy(dtype="int64")
    return labels


def split_shards_of(data_dir: Path, name: str) -> list[Path]:
    """The Parquet shards of one split of a sharded dataset."""
    from pipelines.data.streaming import shard_paths

    return shard_paths(Path(data_dir) / f"{name}.parquet")


def raw_inputs(
    table: pd.DataFrame, features: list[str], input_shape: list[int] | tuple[int, ...]
) -> np.ndarray:
    """Model inputs from raw rows: the feature columns as float64, shaped (n, *input_shape),
    as every registered model takes them (its metadata names `features` and `input_shape`); for
    text (an empty input shape), the one text column as an array of strings."""
    if not len(input_shape):
        return cast(np.ndarray, table[features[0]].to_numpy(dtype=str))
    return cast(
        np.ndarray, table[list(features)].to_numpy(dtype="float64").reshape(-1, *input_shape)
    )


def load_split(data_dir: Path, name: str, prep: Preprocessing) -> tuple[np.ndarray, np.ndarray]:
    """Raw model inputs, shaped as the model takes them, and targets (`encode_labels`) of one
    split, read whole. A sharded dataset is never read whole: see `pipelines.data.streaming`."""
    if prep.sharded:
        raise DataError(
            f"{data_dir}/{name}.parquet is a sharded split; it is streamed, never read whole"
        )
    df = pd.read_parquet(Path(data_dir) / f"{name}.parquet")
    if not len(prep.input_shape):
        # The same strings as `raw_inputs`, kept as Python objects: a fixed-width copy of
        # whole articles is 140 MB for BBC's training split and takes a second to make.
        x = np.array([str(text) for text in df[prep.features[0]]], dtype=object)
    else:
        x = raw_inputs(df, prep.features, prep.input_shape)
    return x, encode_labels(df[prep.label].to_numpy(), prep)
