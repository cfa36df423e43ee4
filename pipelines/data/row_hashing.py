"""Stable splits from row hashes: a salted 64-bit hash of each row (or of its key), the same in
every process and on every platform, and fixed thresholds on it, so a row keeps its split as
the data grows (docs/registration.md: Splits that stay put)."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pandas as pd

from pipelines.dataset_config import SplitConfig
from pipelines.errors import DataError

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def _splitmix64(z: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):  # uint64 arithmetic wraps, as the mixer intends
        z = z + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        mixed: np.ndarray = z ^ (z >> np.uint64(31))
        return mixed


def _blake64(salt: str, texts: list[str]) -> np.ndarray:
    prefix = salt.encode() + b"\0"
    digests = b"".join(
        hashlib.blake2b(prefix + text.encode(), digest_size=8).digest() for text in texts
    )
    return np.frombuffer(digests, dtype="<u8").astype(np.uint64)


def row_hashes(
    table: pd.DataFrame,
    salt: str,
    features: list[str] | tuple[str, ...] = (),
    key: str | None = None,
    text: bool = False,
) -> np.ndarray:
    """A salted uint64 hash of each row, the same in every process and on every platform.

    With `key`: the key column's values as strings (`str(v)`); a missing key is a `DataError`.
    With `text`: the one column `features[0]`, white space normalised (`" ".join(t.split())`).
    Otherwise the `features` columns, taken in name order, as float64 (an int and a float of the
    same value hash alike; -0.0 as 0.0; every NaN as one NaN), chained through splitmix64 from
    a start drawn from the salt."""
    if key is not None:
        values = table[key]
        missing = int(values.isna().sum())
        if missing:
            raise DataError(f"split key column {key!r}: {missing} row(s) have no key")
        return _blake64(salt, [str(v) for v in values.tolist()])
    if text:
        return _blake64(salt, [" ".join(str(t).split()) for t in table[features[0]].tolist()])
    columns = sorted(features)
    values = table[columns].to_numpy(dtype="float64", na_value=np.nan) + 0.0  # -0.0 -> 0.0
    values[np.isnan(values)] = np.nan
    bits = np.ascontiguousarray(values, dtype="<f8").view("<u8").astype(np.uint64)
    start = hashlib.blake2b(salt.encode(), digest_size=8).digest()
    hashes = np.full(len(table), int.from_bytes(start, "little"), dtype=np.uint64)
    for column in range(bits.shape[1]):
        hashes = _splitmix64(hashes ^ bits[:, column])
    return hashes


def assign_splits(hashes: np.ndarray, validation: float, test: float) -> np.ndarray:
    """Each row's split from its hash h, with u = h / 2**64: "test" if u < test, "validation"
    if u < test + validation, else "train". The thresholds are fixed (compared in integers),
    so a row's split never depends on the other rows."""
    test_end = np.uint64(int(test * 2**64))
    validation_end = np.uint64(int((test + validation) * 2**64))
    hashes = np.asarray(hashes, dtype=np.uint64)
    return np.where(
        hashes < test_end, "test", np.where(hashes < validation_end, "validation", "train")
    ).astype(object)


def split_salt(split: SplitConfig, seed: int) -> str:
    """The salt in effect: `split.salt`, or `seed-<base.seed>` when none is set."""
    return split.salt if split.salt is not None else f"seed-{seed}"


def _digest(hashes: np.ndarray) -> str:
    return hashlib.md5(np.sort(hashes).astype("<u8").tobytes()).hexdigest()


def _time_digest(times: pd.Series) -> str:
    return hashlib.md5("\n".join(str(t) for t in times.tolist()).encode()).hexdigest()


def share_allowance(tolerance: float, share: float, rows: int) -> float:
    """How far a class of `rows` rows may be from the configured `share` of a split: the
    stated `split.tolerance`, widened to three standard errors of a share of that many rows
    (3 * sqrt(share * (1 - share) / rows)) where chance alone moves it further. A row's split
    is a fixed function of its hash, never of the other rows, so a class of a few hundred
    rows cannot be split more evenly than that without rows moving as data grows."""
    return max(tolerance, 3.0 * math.sqrt(share * (1.0 - share) / max(rows, 1)))
