"""Seeded stratified split; normalization statistics come from the training split only."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines.config import ConfigError, DatasetConfig
from pipelines.preprocessing import (
    SPEC_FILE,
    Preprocessing,
    load_split,
    split_and_fit,
    stratified_split,
)


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
