"""Which split a row falls into. A row's split is a function of the row alone (as in TFX
ExampleGen): a salted 64-bit hash of its content, or of its key, against fixed thresholds
(`row_hashing`), so a row keeps its split when rows are added or reordered, as long as the salt
and the shares stay the same. A series is split in time. Each split records its identity
(`Preprocessing.split`), under which any table's rows can be placed again (`splits_under`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from pipelines.dataset_config import DatasetConfig, SplitConfig
from pipelines.data.row_hashing import (
    _digest,
    assign_splits,
    row_hashes,
    share_allowance,
    split_salt,
)
from pipelines.errors import ConfigError, DataError

SPLITS = ("train", "validation", "test")
HASH_METHOD = "row-hash-v1"
TEMPORAL_METHOD = "temporal"


class RowSpec(Protocol):
    """How a split's rows are read (`Preprocessing` is one): what `splits_under` hashes."""

    @property
    def features(self) -> list[str]: ...
    @property
    def modality(self) -> str: ...
    @property
    def time_column(self) -> str | None: ...


@dataclass(frozen=True)
class Splits:
    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame


def hash_split(
    table: pd.DataFrame, features: list[str], split: SplitConfig, seed: int, text: bool = False
) -> tuple[Splits, dict[str, Any]]:
    """Split `table` by row hash (`row_hashes` of `features`, or of `split.key`), and the
    split's identity as `Preprocessing.split` records it."""
    salt = split_salt(split, seed)
    hashes = row_hashes(table, salt, features, split.key, text)
    parts = assign_splits(hashes, split.validation, split.test)
    splits = Splits(*(table[parts == part] for part in SPLITS))
    return splits, hash_identity(salt, split, {part: hashes[parts == part] for part in SPLITS})


def hash_identity(salt: str, split: SplitConfig, hashes: dict[str, np.ndarray]) -> dict[str, Any]:
    """A hash split's identity as `Preprocessing.split` records it, from each part's hashes."""
    return {
        "method": HASH_METHOD,
        "salt": salt,
        "key": split.key,
        "validation": split.validation,
        "test": split.test,
        "digests": {part: _digest(hashes[part]) for part in SPLITS},
    }


def splits_under(identity: dict[str, Any], table: pd.DataFrame, prep: RowSpec) -> np.ndarray:
    """For each row of `table` (a processed split file: raw feature columns, label, and key or
    time column), the split ("train" / "validation" / "test") it falls into under the split
    `identity` (a `Preprocessing.split` dict, maybe of another version). The rows are hashed as
    `prep` describes them (its features, its modality) unless the identity names a key. Raises
    ValueError naming what is missing when the identity cannot be applied (unknown method, key
    or time column not in the table, empty identity)."""
    if not identity:
        raise ValueError("empty split identity (a preprocessing.json from before split identities)")
    method = identity.get("method")
    if method == HASH_METHOD:
        needed = ("salt", "key", "validation", "test")
        absent = [name for name in needed if name not in identity]
        if absent:
            raise ValueError(f"split identity {method}: no {', '.join(absent)}")
        key = identity["key"]
        columns = [key] if key is not None else list(prep.features)
        missing = [c for c in columns if c not in table.columns]
        if missing:
            what = "key column" if key is not None else "feature column(s)"
            raise ValueError(f"split identity {method}: {what} {missing} not in the table")
        hashes = row_hashes(table, identity["salt"], prep.features, key, prep.modality == "text")
        return assign_splits(hashes, identity["validation"], identity["test"])
    if method == TEMPORAL_METHOD:
        absent = [n for n in ("validation_start", "test_start") if n not in identity]
        if absent:
            raise ValueError(f"split identity {method}: no {', '.join(absent)}")
        column = prep.time_column
        if column is None or column not in table.columns:
            raise ValueError(f"split identity {method}: time column {column!r} not in the table")
        times = pd.to_datetime(table[column]).to_numpy()
        test_start = pd.Timestamp(identity["test_start"]).to_datetime64()
        validation_start = pd.Timestamp(identity["validation_start"]).to_datetime64()
        return np.where(
            times >= test_start, "test", np.where(times >= validation_start, "validation", "train")
        ).astype(object)
    raise ValueError(f"unknown split method {method!r} (known: {HASH_METHOD}, {TEMPORAL_METHOD})")


def check_class_shares(name: str, splits: Splits, label: str, split: SplitConfig) -> None:
    """Each class's share of its rows in each split against the configured share: further
    than `share_allowance` is a `DataError` naming the class."""
    configured = {"train": 1.0 - split.validation - split.test}
    configured.update(validation=split.validation, test=split.test)
    counts = pd.DataFrame({part: getattr(splits, part)[label].value_counts() for part in SPLITS})
    counts = counts.fillna(0).astype("int64")
    breaches = []
    for value, row in counts.iterrows():
        cls = value.item() if hasattr(value, "item") else value  # 0, not np.int64(0)
        total = int(row.sum())
        for part in SPLITS:
            share = row[part] / total
            allowed = share_allowance(split.tolerance, configured[part], total)
            if abs(share - configured[part]) > allowed:
                breaches.append(
                    f"class {cls!r} has {share:.3f} of its {total} rows in {part}, "
                    f"configured {configured[part]:.3f} (allowed: +-{allowed:.3f})"
                )
    if breaches:
        raise DataError(
            f"datasets.{name}: the split misses the class shares by more than allowed "
            f"(split.tolerance {split.tolerance}, or 3 standard errors for a small class): "
            + "; ".join(breaches)
            + ". Choose another split.salt, or allow a larger split.tolerance"
        )


def check_key(name: str, dataset: DatasetConfig, columns: list[str], data_path: Path) -> None:
    key = dataset.split.key
    if key is None:
        return
    where = f"datasets.{name}.split.key"
    if dataset.modality == "sequence":
        raise ConfigError(f"{where}: a series is split in time, not by key")
    if key == dataset.label:
        raise ConfigError(f"{where}: {key!r} is the label; a key identifies rows")
    if key not in columns:
        raise ConfigError(f"{where}: column {key!r} not in {data_path}")


def method_line(identity: dict[str, Any]) -> str:
    if identity["method"] == TEMPORAL_METHOD:
        return (
            f"split method {TEMPORAL_METHOD}: validation from {identity['validation_start']}, "
            f"test from {identity['test_start']}"
        )
    key = f", key {identity['key']!r}" if identity["key"] is not None else ""
    return f"split method {identity['method']}: salt {identity['salt']!r}{key}"
