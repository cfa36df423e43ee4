"""Split the validated data and fit the preprocessing that will live inside the model.

The split stage writes `train/validation/test.parquet` and `preprocessing.json` for every
modality. Each split is a table of raw feature columns plus the label: measurements for tabular
data, `pixel_<row>_<col>` values for images, and for a series one row per forecast with the
raw window (`t-52` ... `t-1`) and the target. The JSON is the contract with the model builders:
features, input shape, label classes in index order and the statistics fitted on the training
split only.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipelines.config import DatasetConfig, ShardsConfig
from pipelines.data.datasets import PIXEL_PREFIX, image_shape, read_table
from pipelines.errors import ConfigError, DataError
from pipelines.data.drift import (
    REFERENCE_FILE,
    drift_features,
    reference_profile,
    save_reference,
    training_vocabulary,
)

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
    task_type: str = "classification"
    time_column: str | None = None
    sharded: bool = False  # splits are folders of Parquet shards (pipelines.data.streaming)
    rows: dict[str, int] = field(default_factory=dict)  # rows per split

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
    split = dataset.split
    splits = stratified_split(df, dataset.label, split.validation, split.test, seed)
    features = [c for c in df.columns if c != dataset.label]
    prep = Preprocessing(
        modality="tabular",
        features=features,
        label=dataset.label,
        classes=_classes(splits, dataset.label),
        input_shape=[len(features)],
        stats=fit_normalization(splits.train[features].to_numpy()),
    )
    return splits, prep


def _images(df: pd.DataFrame, dataset: DatasetConfig, seed: int) -> tuple[Splits, Preprocessing]:
    split = dataset.split
    splits = stratified_split(df, dataset.label, split.validation, split.test, seed)
    features = [c for c in df.columns if c.startswith(PIXEL_PREFIX)]
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
    )
    return splits, prep


def _longest_gap(values: pd.Series) -> tuple[int, int]:
    """(length, start position) of the longest run of missing values."""
    missing = values.isna().reset_index(drop=True)
    run_id = (missing != missing.shift()).cumsum()
    run_length = missing.groupby(run_id).transform("size").where(missing, 0)
    longest = int(run_length.max()) if len(run_length) else 0
    return longest, int(np.argmax(run_length.to_numpy() == longest)) if longest else 0


def time_index_problems(
    df: pd.DataFrame, time_column: str, value: str, max_gap: int
) -> list[tuple[str, str, str]]:
    """The series policy, as (check, column, detail) for each broken rule: the time index is
    strictly increasing with one regular step, and no run of missing values is longer than
    `max_gap` (shorter ones are filled by interpolation)."""
    if time_column not in df.columns or value not in df.columns or len(df) < 2:
        return []  # the expectation suite reports missing columns and too few rows
    times = pd.to_datetime(df[time_column], errors="coerce").reset_index(drop=True)
    steps = times.diff().iloc[1:]
    problems = []
    unreadable = int(times.isna().sum())
    if unreadable:
        problems.append(
            ("time_index_readable", time_column, f"{unreadable} value(s) are not dates")
        )
    backwards = (steps <= pd.Timedelta(0)).to_numpy()
    if backwards.any():
        where = times.iloc[1:][backwards]
        problems.append(
            (
                "time_index_strictly_increasing",
                time_column,
                f"{int(backwards.sum())} step(s) go back or repeat, first at {where.iloc[0]}",
            )
        )
    elif len(steps) and steps.notna().all():
        step = steps.mode().iloc[0]
        irregular = (steps != step).to_numpy()
        if irregular.any():
            where = times.iloc[1:][irregular]
            problems.append(
                (
                    "time_index_regular",
                    time_column,
                    f"{int(irregular.sum())} step(s) other than {step}, first at "
                    f"{where.iloc[0]}, e.g. {sorted(set(map(str, steps[irregular])))[:3]} "
                    "(for missing measurements keep the timestamp and leave the value empty)",
                )
            )
    longest, start = _longest_gap(pd.to_numeric(df[value], errors="coerce"))
    if longest > max_gap:
        problems.append(
            (
                "gap_within_max_gap",
                value,
                f"a gap of {longest} missing steps from {times.iloc[start]}; "
                f"the fill policy (series.max_gap) allows at most {max_gap}",
            )
        )
    return problems


def fill_gaps(df: pd.DataFrame, time_column: str, value: str, max_gap: int) -> pd.DataFrame:
    """Check the time index (see `time_index_problems`) and fill runs of at most `max_gap`
    missing values by linear interpolation. A broken rule is an error; missing values at either
    end are dropped."""
    problems = time_index_problems(df, time_column, value, max_gap)
    if problems:
        raise DataError(
            "; ".join(f"{check} ({column}): {detail}" for check, column, detail in problems)
        )
    missing = df[value].isna().reset_index(drop=True)
    longest, _ = _longest_gap(df[value])
    filled = df[[time_column, value]].reset_index(drop=True)
    filled[value] = filled[value].interpolate(method="linear", limit_area="inside")
    filled = filled.dropna(subset=[value]).reset_index(drop=True)
    print(
        f"filled {int(missing.sum())} missing values by interpolation "
        f"(longest gap {longest} steps, max_gap {max_gap})"
    )
    return filled


def window_columns(window: int) -> list[str]:
    """Names of the raw window's columns, oldest first: `t-52`, ..., `t-1`."""
    return [f"t-{lag}" for lag in range(window, 0, -1)]


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
    )
    return splits, prep


def _text(df: pd.DataFrame, dataset: DatasetConfig, seed: int) -> tuple[Splits, Preprocessing]:
    """Documents and their class. Exact duplicates (the same text once surrounding white space
    is stripped) are dropped before the split, keeping the first, so no text can be in both
    training and test; how many were dropped is printed and kept in `stats`. The tokenizer is
    adapted on the training split inside the model (`pipelines.model.builders`)."""
    column = dataset.text
    if column not in df.columns:
        raise ConfigError(f"text column {column!r} not in the data (columns: {list(df.columns)})")
    table = df[[column, dataset.label]].reset_index(drop=True)
    duplicated = table[column].astype(str).str.strip().duplicated()
    if duplicated.any():
        print(f"dropped {int(duplicated.sum())} exact duplicate text(s) before the split")
    table = table[~duplicated.to_numpy()].reset_index(drop=True)
    split = dataset.split
    splits = stratified_split(table, dataset.label, split.validation, split.test, seed)
    prep = Preprocessing(
        modality="text",
        features=[column],
        label=dataset.label,
        classes=_classes(splits, dataset.label),
        input_shape=[],  # one raw string per example
        stats={"duplicates_dropped": int(duplicated.sum())},
    )
    return splits, prep


# One preparation (split + preprocessing fitted on train) per modality.
_PREPARERS = {"tabular": _tabular, "images": _images, "sequence": _sequence, "text": _text}


def split_shards(
    name: str, data_path: Path, dataset: DatasetConfig, seed: int, out_dir: Path
) -> Preprocessing:
    """The split of a sharded tabular dataset, in one streaming pass: every row goes to test,
    validation or train at random (seeded, in the configured shares; not stratified, which at
    this size changes class shares by a fraction of a percent) and to a random shard of that
    part. Normalization statistics, the label set and the drift reference (a seeded sample of
    train) are gathered in the same pass."""
    from pipelines.data import streaming

    shards = streaming.shard_paths(data_path)
    columns = streaming.columns_of(shards[0])
    if dataset.label not in columns:
        raise ConfigError(f"datasets.{name}.label: column {dataset.label!r} not in {data_path}")
    features = [c for c in columns if c != dataset.label]
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
    moments, classes, sample = streaming.Moments(), set(), []
    sample_share = min(1.0, streaming.SAMPLE_ROWS / max(total * shares["train"], 1))
    try:
        for _, frame in streaming.iter_frames(shards):
            draw = rng.random(len(frame))
            parts = np.where(
                draw < shares["test"],
                0,
                np.where(draw < shares["test"] + shares["validation"], 1, 2),
            )
            for index, part in ((0, "test"), (1, "validation"), (2, "train")):
                writers[part].scatter(frame[parts == index], rng)
            train = frame[parts == 2]
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
    )
    prep.save(out_dir / SPEC_FILE)
    reference = drift_features(pd.concat(sample), "tabular", dataset.label)
    save_reference(reference_profile(reference), out_dir / REFERENCE_FILE)
    print(
        f"split {len(shards)} shard(s) of {data_path.name}: {rows}; "
        "preprocessing fitted on train only, streamed"
    )
    return prep


def split_and_fit(
    name: str, data_path: Path, dataset: DatasetConfig, seed: int, out_dir: Path
) -> Preprocessing:
    """Split the raw table, fit preprocessing on train only, and write both to `out_dir`."""
    from pipelines.data.streaming import is_sharded

    if is_sharded(data_path):
        out_dir.mkdir(parents=True, exist_ok=True)
        return split_shards(name, data_path, dataset, seed, out_dir)
    df = read_table(data_path)
    if dataset.label not in df.columns:
        raise ConfigError(f"datasets.{name}.label: column {dataset.label!r} not in {data_path}")
    splits, prep = _PREPARERS[dataset.modality](df, dataset, seed)
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
    reference = drift_features(
        splits.train, dataset.modality, dataset.label, prep.time_column, vocabulary
    )
    time_end = str(splits.train[prep.time_column].max()) if prep.time_column else None
    save_reference(reference_profile(reference, time_end, vocabulary), out_dir / REFERENCE_FILE)
    sizes = {part: len(getattr(splits, part)) for part in SPLITS}
    print(f"split {data_path.name}: {sizes}; preprocessing fitted on train only")
    return prep


def encode_labels(values: np.ndarray, prep: Preprocessing) -> np.ndarray:
    """Targets as the model learns them: class indices for classification, values in original
    units for regression."""
    if prep.task_type == "regression":
        return np.asarray(values, dtype="float64")
    index = {c: i for i, c in enumerate(prep.classes)}
    return pd.Series(values).map(index).to_numpy(dtype="int64")


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
        return table[features[0]].to_numpy(dtype=str)
    return table[list(features)].to_numpy(dtype="float64").reshape(-1, *input_shape)


def load_split(data_dir: Path, name: str, prep: Preprocessing) -> tuple[np.ndarray, np.ndarray]:
    """Raw model inputs, shaped as the model takes them, and targets (`encode_labels`) of one
    split, read whole. A sharded dataset is never read whole: see `pipelines.data.streaming`."""
    if prep.sharded:
        raise DataError(
            f"{data_dir}/{name}.parquet is a sharded split; it is streamed, never read whole"
        )
    df = pd.read_parquet(Path(data_dir) / f"{name}.parquet")
    x = raw_inputs(df, prep.features, prep.input_shape)
    return x, encode_labels(df[prep.label].to_numpy(), prep)
