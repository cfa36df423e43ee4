"""Seeded stratified split; normalization statistics come from the training split only."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines.config import ConfigError, DatasetConfig
from pipelines.data.preprocessing import (
    SPEC_FILE,
    SPLITS,
    Preprocessing,
    fill_gaps,
    load_split,
    split_and_fit,
    stratified_split,
)
from pipelines.errors import DataError


def test_split_sizes_are_disjoint_and_stratified(breast_cancer):
    parts = stratified_split(breast_cancer, "target", validation=0.15, test=0.2, seed=42)
    sizes = [len(parts.train), len(parts.validation), len(parts.test)]
    assert sum(sizes) == len(breast_cancer)
    assert sizes[2] == 114 and sizes[1] == 86
    indices = [set(p.index) for p in (parts.train, parts.validation, parts.test)]
    assert not (indices[0] & indices[1]) and not (indices[0] & indices[2])
    share = breast_cancer["target"].mean()
    for part in (parts.train, parts.validation, parts.test):
        assert abs(part["target"].mean() - share) < 0.02


def test_split_is_seeded(breast_cancer):
    a = stratified_split(breast_cancer, "target", 0.15, 0.2, seed=7)
    b = stratified_split(breast_cancer, "target", 0.15, 0.2, seed=7)
    c = stratified_split(breast_cancer, "target", 0.15, 0.2, seed=8)
    assert list(a.test.index) == list(b.test.index)
    assert list(a.test.index) != list(c.test.index)


def test_split_and_fit_uses_train_statistics_only(breast_cancer, tmp_path):
    raw = tmp_path / "raw.parquet"
    breast_cancer.to_parquet(raw, index=False)
    prep = split_and_fit(
        "bc", raw, DatasetConfig(modality="tabular", source=str(raw)), 42, tmp_path / "out"
    )
    assert prep == Preprocessing.load(tmp_path / "out" / SPEC_FILE)
    assert prep.classes == [0, 1] and prep.input_shape == [30]
    train = pd.read_parquet(tmp_path / "out" / "train.parquet")
    np.testing.assert_allclose(prep.stats["mean"], train[prep.features].mean(), rtol=1e-5)
    np.testing.assert_allclose(prep.stats["variance"], train[prep.features].var(ddof=0), rtol=1e-4)
    full_mean = breast_cancer[prep.features].mean().to_numpy()
    assert not np.allclose(prep.stats["mean"], full_mean, rtol=1e-6)
    x, y = load_split(tmp_path / "out", "test", prep)
    assert x.shape == (114, 30) and x.dtype == np.float64 and set(y) == {0, 1}


def test_missing_label_column_is_named(breast_cancer, tmp_path):
    raw = tmp_path / "raw.parquet"
    breast_cancer.drop(columns=["target"]).to_parquet(raw, index=False)
    with pytest.raises(ConfigError, match=r"datasets\.bc\.label: column 'target'"):
        split_and_fit(
            "bc", raw, DatasetConfig(modality="tabular", source=str(raw)), 42, tmp_path / "out"
        )


def _series(values, start="2000-01-01", freq="7D"):
    return pd.DataFrame(
        {"date": pd.date_range(start, periods=len(values), freq=freq), "co2": values}
    )


def test_gaps_within_the_policy_are_interpolated():
    df = _series([1.0, np.nan, np.nan, 4.0, 5.0, np.nan])
    filled = fill_gaps(df, "date", "co2", max_gap=2)
    assert filled["co2"].tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]  # trailing gap dropped


def test_a_gap_wider_than_the_policy_is_named():
    df = _series([1.0, np.nan, np.nan, np.nan, 5.0])
    with pytest.raises(DataError, match=r"gap of 3 missing steps from 2000-01-08.*at most 2"):
        fill_gaps(df, "date", "co2", max_gap=2)


def test_irregular_and_unordered_time_index_are_rejected():
    df = _series([1.0, 2.0, 3.0, 4.0])
    irregular = df.drop(index=2).reset_index(drop=True)
    with pytest.raises(DataError, match=r"time_index_regular.*first at 2000-01-22"):
        fill_gaps(irregular, "date", "co2", max_gap=2)
    swapped = df.iloc[[0, 2, 1, 3]].reset_index(drop=True)
    with pytest.raises(DataError, match="time_index_strictly_increasing"):
        fill_gaps(swapped, "date", "co2", max_gap=2)


def test_series_split_is_temporal_with_raw_windows(tmp_path):
    from pipelines.data.datasets import load_source

    raw = tmp_path / "co2.parquet"
    load_source("statsmodels:co2").to_parquet(raw, index=False)
    cfg = DatasetConfig(
        modality="sequence",
        source=str(raw),
        label="co2",
        split={"validation": 0.1, "test": 0.2},
        series={"time_column": "date", "window": 52, "max_gap": 20},
    )
    prep = split_and_fit("co2", raw, cfg, 0, tmp_path / "out")
    train, val, test = (
        pd.read_parquet(tmp_path / "out" / f"{p}.parquet") for p in ("train", "validation", "test")
    )
    assert len(test) == 457 and len(train) + len(val) + len(test) == 2284 - 52
    assert train["date"].max() < val["date"].min() <= val["date"].max() < test["date"].min()
    # Each row's window is the 52 raw values just before its target, oldest first.
    row = test.iloc[10]
    previous = test.iloc[9]
    assert row["t-1"] == previous["co2"] and row["t-2"] == previous["t-1"]
    assert prep.input_shape == [52, 1] and prep.task_type == "regression"
    x, y = load_split(tmp_path / "out", "test", prep)
    assert x.shape == (457, 52, 1) and y.shape == (457,)
    assert prep.stats["step_scale"] > 0


def test_image_preprocessing_scale_comes_from_training_pixels(tmp_path):
    from pipelines.data.datasets import load_source

    raw = tmp_path / "digits.parquet"
    load_source("sklearn:digits").to_parquet(raw, index=False)
    prep = split_and_fit(
        "digits", raw, DatasetConfig(modality="images", source=str(raw)), 42, tmp_path / "out"
    )
    assert prep.input_shape == [8, 8] and prep.classes == list(range(10))
    assert prep.stats["scale"] == pytest.approx(1 / 16)
    x, y = load_split(tmp_path / "out", "test", prep)
    assert x.shape == (360, 8, 8) and x.max() == 16.0 and set(y) == set(range(10))


def test_no_text_is_in_two_splits_and_duplicates_are_dropped_and_counted(tmp_path, raw_params):
    from pipelines.config import parse_config
    from pipelines.data.datasets import ingest
    from pipelines.data.preprocessing import split_and_fit

    cfg = parse_config(raw_params)
    raw = ingest("bbc_news", cfg.dataset("bbc_news"), tmp_path / "raw.parquet")
    prep = split_and_fit("bbc_news", raw, cfg.dataset("bbc_news"), 42, tmp_path / "data")
    parts = {p: pd.read_parquet(tmp_path / "data" / f"{p}.parquet") for p in SPLITS}
    assert prep.stats["duplicates_dropped"] == 98
    assert sum(len(part) for part in parts.values()) == 2225 - 98
    texts = {p: set(part["text"].str.strip()) for p, part in parts.items()}
    assert not texts["train"] & texts["test"] and not texts["train"] & texts["validation"]
    assert not texts["validation"] & texts["test"]
    assert prep.modality == "text" and prep.input_shape == [] and prep.features == ["text"]
    assert len(prep.classes) == 5
