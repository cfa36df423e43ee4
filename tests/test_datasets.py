"""Ingest writes the real data; unreadable files fail with a message naming the file."""

from __future__ import annotations

import pandas as pd
import pytest

from pipelines.config import DatasetConfig
from pipelines.datasets import DataError, ingest, load_source, read_table


def test_builtin_breast_cancer_is_the_real_table(breast_cancer):
    assert breast_cancer.shape == (569, 31)
    assert set(breast_cancer["target"].unique()) == {0, 1}
    assert breast_cancer["target"].value_counts().to_dict() == {1: 357, 0: 212}
    assert "mean_radius" in breast_cancer.columns
    assert not breast_cancer.isna().any().any()


def test_ingest_round_trips_a_user_csv(tmp_path, breast_cancer):
    csv = tmp_path / "mine.csv"
    breast_cancer.head(50).to_csv(csv, index=False)
    out = ingest(
        "mine",
        DatasetConfig(modality="tabular", source=str(csv)),
        tmp_path / "raw" / "mine.parquet",
    )
    back = pd.read_parquet(out)
    pd.testing.assert_frame_equal(back, breast_cancer.head(50), check_dtype=False)
    assert not list(tmp_path.glob("raw/*.tmp"))


def test_unknown_builtin_source():
    with pytest.raises(DataError, match="unknown built-in source 'sklearn:iris'"):
        load_source("sklearn:iris")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.csv", b"", "the file is empty"),
        ("broken.parquet", b"PAR1 this is not parquet", "cannot be read as parquet"),
        ("table.xlsx", b"x", "unsupported file type"),
    ],
)
def test_unreadable_files(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError, match=message) as err:
        read_table(path)
    assert name in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="data file not found"):
        read_table(tmp_path / "absent.csv")
