"""Ingest: materialize a dataset as a file under `data/`.

Built-in sources are real datasets that ship inside installed packages, so ingest never needs
the network. Any other source is a path to a CSV or Parquet file.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from pipelines.config import DatasetConfig


class DataError(ValueError):
    """A data file is missing, unreadable or not a table."""


def _snake(name: str) -> str:
    return re.sub(r"[^0-9a-zA-Z]+", "_", name).strip("_").lower()


def _sklearn_breast_cancer() -> pd.DataFrame:
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer(as_frame=True)
    frame = bunch.frame.rename(columns=_snake)
    frame["target"] = frame["target"].astype("int64")
    return frame


BUILTIN_SOURCES: dict[str, Callable[[], pd.DataFrame]] = {
    "sklearn:breast_cancer": _sklearn_breast_cancer,
}

_READERS: dict[str, Callable[[Path], pd.DataFrame]] = {
    ".csv": pd.read_csv,
    ".parquet": pd.read_parquet,
    ".pq": pd.read_parquet,
}


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV or Parquet file, with an error that says what is wrong with it."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise DataError(f"{path}: unsupported file type {path.suffix!r} (use .csv or .parquet)")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty")
    try:
        return reader(path)
    except Exception as err:  # pandas/pyarrow raise many types for a damaged file
        raise DataError(f"{path}: cannot be read as {path.suffix[1:]}: {err}") from None


def load_source(source: str) -> pd.DataFrame:
    """Load a built-in dataset by name, or read a CSV/Parquet path."""
    if source in BUILTIN_SOURCES:
        return BUILTIN_SOURCES[source]()
    if (
        ":" in source
        and not Path(source).exists()
        and source.split(":")[0].isalpha()
        and len(source.split(":")[0]) > 1
    ):
        known = ", ".join(BUILTIN_SOURCES)
        raise DataError(f"unknown built-in source {source!r} (known: {known})")
    return read_table(source)


def ingest(name: str, dataset: DatasetConfig, out: Path) -> Path:
    """Write dataset `name` to `out` as Parquet and return the path."""
    df = load_source(dataset.source)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    df.to_parquet(tmp, index=False)
    shutil.move(tmp, out)  # never leave a half-written file under the final name
    print(f"ingested {name}: {len(df)} rows x {df.shape[1]} columns from {dataset.source} -> {out}")
    return out
