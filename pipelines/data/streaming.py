"""Tabular data larger than memory: Parquet shards, read a record batch at a time.

A dataset with `shards:` in params is kept as a folder of Parquet files (`<name>.parquet/`,
`part-00000.parquet`, ...) by every stage:

- ingest copies the source shards batch by batch (`copy_shards`);
- validate runs the suite shard by shard and measures drift on a seeded sample
  (`sample_rows`);
- split sends every row to train, validation or test by its row hash (as for a table read
  whole) and scatters it over that part's shards at random (seeded), so each shard is a random
  sample of the whole; normalization statistics are merged in the same pass (`Moments`)
  (`split_shards`);
- train feeds `tf.data` from the shards, one shard in memory at a time, shuffled within it and
  in a new shard order every epoch (`shard_dataset`);
- evaluate predicts in batches (`predict_shards`); register gathers the sampled test rows it
  compares on (`take_rows`).

The data in memory is one shard (`shards.rows`, 1M rows by default) and a few record batches,
whatever the number of rows. What grows with the rows: evaluate's test predictions and labels,
split's one open writer per output shard and its row hashes (8 bytes a row, for the split's
digests).
"""

from __future__ import annotations

import logging
import math
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipelines.errors import DataError

log = logging.getLogger(__name__)

READ_ROWS = 65_536
FLUSH_ROWS = 16_384  # rows an output shard buffers before it spills them (and its row groups)
BUFFER_ROWS = 262_144  # rows all the shards of one writer buffer together, at most
SHARD_PATTERN = "part-{:05d}.parquet"
SAMPLE_ROWS = 100_000  # rows behind a drift reference or a drift check


class ShardError(DataError):
    """A folder of shards is missing, empty, unreadable or inconsistent."""


def is_sharded(path: Path) -> bool:
    """True for a folder of Parquet shards (what ingest writes for a `shards:` dataset)."""
    return Path(path).is_dir() and any(Path(path).glob("*.parquet"))


def shard_paths(path: Path) -> list[Path]:
    """The Parquet files of a shard folder, in name order (the order every stage reads)."""
    path = Path(path)
    if not path.is_dir():
        raise ShardError(f"{path}: not a folder of Parquet shards")
    shards = sorted(p for p in path.glob("*.parquet") if p.is_file())
    if not shards:
        raise ShardError(f"{path}: no .parquet files in the folder")
    return shards


def read_errors() -> tuple[type[BaseException], ...]:
    """What pyarrow raises for a damaged or unreadable file (never MemoryError)."""
    import pyarrow as pa

    return (pa.ArrowException, OSError, ValueError)


def _parquet(shard: Path) -> Any:
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(shard)
    except read_errors() as err:
        raise ShardError(f"{shard}: cannot be read as Parquet: {err}") from err


def row_count(shards: Sequence[Path]) -> int:
    """Rows in all shards, from the Parquet footers (nothing is decoded)."""
    return sum(_parquet(s).metadata.num_rows for s in shards)


def columns_of(shard: Path) -> list[str]:
    return list(_parquet(shard).schema_arrow.names)


def read_shard(shard: Path) -> pd.DataFrame:
    """One whole shard (at most `shards.rows` rows)."""
    parquet = _parquet(shard)
    try:
        return parquet.read().to_pandas()
    except read_errors() as err:
        raise ShardError(f"{shard}: cannot be read as Parquet: {err}") from err


def source_shards(source: Path) -> list[Path]:
    """The shards of a sharded dataset's source: a folder of Parquet files, or one file."""
    return shard_paths(source) if Path(source).is_dir() else [Path(source)]


def _record_batches(shard: Path, columns: list[str], read_rows: int) -> Iterator[Any]:
    """Arrow record batches of `columns` from one shard. A missing column or a damaged file is
    a `ShardError` naming the shard."""
    parquet = _parquet(shard)
    missing = [c for c in columns if c not in parquet.schema_arrow.names]
    if missing:
        raise ShardError(f"{shard}: missing column(s) {missing}")
    try:
        yield from parquet.iter_batches(batch_size=read_rows, columns=columns)
    except read_errors() as err:
        raise ShardError(f"{shard}: cannot be read as Parquet: {err}") from err


def iter_frames(
    shards: Sequence[Path], columns: list[str] | None = None, read_rows: int = READ_ROWS
) -> Iterator[tuple[Path, pd.DataFrame]]:
    """(shard, frame of up to `read_rows` rows), shard by shard, in file order. Without
    `columns`, every shard must have the first shard's columns, in the same order."""
    expected = columns_of(shards[0]) if shards else []
    for shard in shards:
        if columns is None:
            names = columns_of(shard)
            if names != expected:
                missing = [c for c in expected if c not in names]
                if missing:
                    raise ShardError(f"{shard}: missing column(s) {missing}")
                extra = [c for c in names if c not in expected]
                raise ShardError(
                    f"{shard}: columns differ from {shards[0].name}'s"
                    + (f" (unexpected {extra})" if extra else " (other order)")
                )
        for batch in _record_batches(shard, columns or expected, read_rows):
            yield shard, batch.to_pandas()


class ShardWriter:
    """Write one part's rows to `count` shards in a new folder at `out` (replacing whatever is
    there only when `close` succeeds).

    Bounded at any number of shards: rows are buffered per shard, and a shard whose buffer
    reaches `FLUSH_ROWS`, or the largest buffers once all of them hold `BUFFER_ROWS`, are
    written out as a closed part file (no writer stays open). `finish` merges a shard's parts
    into its one Parquet file, in row groups of `FLUSH_ROWS`. So at most one file is open at a
    time, and the buffers hold at most about `BUFFER_ROWS` rows plus one shard at finish."""

    def __init__(self, out: Path, count: int):
        self.out, self.count = Path(out), max(1, count)
        self.tmp = self.out.with_name(f".{self.out.name}.tmp")
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(parents=True)
        self.rows = 0
        self._buffers: dict[int, list[pd.DataFrame]] = {}
        self._buffered: dict[int, int] = {}
        self._parts: dict[int, list[Path]] = {}
        self._finished: set[int] = set()

    @property
    def buffered_rows(self) -> int:
        return sum(self._buffered.values())

    def write(self, frame: pd.DataFrame, shard: int = 0) -> None:
        if not len(frame):
            return
        if shard in self._finished:
            raise RuntimeError(f"shard {shard} of {self.out} is already finished")
        self._buffers.setdefault(shard, []).append(frame)
        self._buffered[shard] = self._buffered.get(shard, 0) + len(frame)
        self.rows += len(frame)
        if self._buffered[shard] >= FLUSH_ROWS:
            self._spill(shard)
        if self.buffered_rows > BUFFER_ROWS:
            for largest in sorted(self._buffered, key=lambda s: self._buffered[s], reverse=True):
                self._spill(largest)
                if self.buffered_rows <= BUFFER_ROWS // 2:
                    break

    def scatter(self, frame: pd.DataFrame, rng: np.random.Generator) -> None:
        """Each row to a shard drawn at random, so every shard samples the whole part. One
        stable sort by target shard, then one slice per shard that got rows: O(rows log rows)
        whatever the number of shards."""
        target = rng.integers(0, self.count, len(frame))
        order = np.argsort(target, kind="stable")
        counts = np.bincount(target, minlength=self.count)
        ends = np.cumsum(counts)
        ordered = frame.iloc[order]
        for shard in np.flatnonzero(counts):
            self.write(ordered.iloc[ends[shard] - counts[shard] : ends[shard]], int(shard))

    def _spill(self, shard: int) -> None:
        """Write a shard's buffer as one more closed part file."""
        frames = self._buffers.pop(shard, [])
        self._buffered.pop(shard, None)
        if not frames:
            return
        parts = self._parts.setdefault(shard, [])
        path = self.tmp / f".{SHARD_PATTERN.format(shard)}.part{len(parts):05d}"
        pd.concat(frames, ignore_index=True).to_parquet(path, index=False)
        parts.append(path)

    def finish(self, shard: int) -> None:
        """Write one shard's file from its parts and buffer, in row groups of `FLUSH_ROWS`."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        frames = [pd.read_parquet(part) for part in self._parts.pop(shard, [])]
        frames += self._buffers.pop(shard, [])
        self._buffered.pop(shard, None)
        self._finished.add(shard)
        if not frames:
            return
        table = pa.Table.from_pandas(pd.concat(frames, ignore_index=True), preserve_index=False)
        pq.write_table(table, self.tmp / SHARD_PATTERN.format(shard), row_group_size=FLUSH_ROWS)
        for part in self.tmp.glob(f".{SHARD_PATTERN.format(shard)}.part*"):
            part.unlink()

    def close(self) -> int:
        """Finish every shard, then move the folder into place; returns the rows written."""
        for shard in range(self.count):
            if shard not in self._finished:
                self.finish(shard)
        if self.out.is_dir():
            shutil.rmtree(self.out)
        elif self.out.exists():
            self.out.unlink()
        self.tmp.rename(self.out)
        return self.rows

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def copy_shards(source: Path, out: Path, shard_rows: int) -> tuple[int, int]:
    """Copy the Parquet shards of `source` (a folder, or one Parquet file) to `out` as shards of
    at most `shard_rows` rows, a record batch at a time. Returns (rows, shards)."""
    shards = source_shards(source)
    total = row_count(shards)
    if total == 0:
        raise ShardError(f"{source}: no rows in {len(shards)} shard(s)")
    count = math.ceil(total / shard_rows)
    writer = ShardWriter(out, count)
    try:
        written = 0
        for _, frame in iter_frames(shards):
            while len(frame):
                shard = min(written // shard_rows, count - 1)
                room = (shard + 1) * shard_rows - written
                writer.write(frame.iloc[:room], shard)
                written += min(room, len(frame))
                frame = frame.iloc[room:]
                if written % shard_rows == 0:
                    writer.finish(shard)  # full: one open shard at a time
        return writer.close(), count
    except BaseException:
        writer.abort()
        raise


class Moments:
    """Per-feature count, mean and population variance, merged batch by batch (Chan et al.).
    One batch gives exactly NumPy's `mean` and `var` of it."""

    def __init__(self) -> None:
        self.count = 0
        self.mean: np.ndarray | None = None
        self.m2: np.ndarray | None = None
        self._var: np.ndarray | None = None  # NumPy's own variance while there is one batch

    def add(self, x: np.ndarray) -> None:
        x = np.asarray(x, dtype="float64")
        n = len(x)
        if n == 0:
            return
        mean, var = x.mean(axis=0), x.var(axis=0)
        m2 = var * n
        if self.mean is None:
            self.count, self.mean, self.m2, self._var = n, mean, m2, var
            return
        self._var = None
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta**2 * (self.count * n / total)
        self.count = total

    def result(self) -> dict[str, list[float]]:
        if self.mean is None or self.m2 is None:
            raise ValueError("no rows to compute statistics from")
        variance = self._var if self._var is not None else self.m2 / self.count
        return {"mean": self.mean.tolist(), "variance": np.asarray(variance).tolist()}


def stream_normalization(
    shards: Sequence[Path], features: list[str], read_rows: int = READ_ROWS
) -> dict[str, list[float]]:
    """Mean and variance of every feature in one streaming pass, as `preprocessing.json`
    stores them (float32 inputs, float64 sums, like `fit_normalization`)."""
    moments = Moments()
    for x, _ in _read(shards, features, None, read_rows):
        moments.add(x)
    return moments.result()


def column_ranges(shards: Sequence[Path]) -> dict[str, tuple[float, float]]:
    """(min, max) of every numeric column over all rows, one record batch at a time."""
    ranges: dict[str, tuple[float, float]] = {}
    for _, frame in iter_frames(shards):
        numeric = frame.select_dtypes("number")
        for column, low, high in zip(numeric.columns, numeric.min(), numeric.max(), strict=True):
            old = ranges.get(column, (low, high))
            ranges[column] = (min(old[0], low), max(old[1], high))
    return ranges


def sample_rows(
    shards: Sequence[Path], rows: int, seed: int, columns: list[str] | None = None
) -> pd.DataFrame:
    """About `rows` rows drawn uniformly (seeded) from the shards, in one streaming pass."""
    total = row_count(shards)
    share = min(1.0, rows / max(total, 1))
    rng = np.random.default_rng(seed)
    picked = [frame[rng.random(len(frame)) < share] for _, frame in iter_frames(shards, columns)]
    return pd.concat(picked, ignore_index=True)


def _present(y: np.ndarray | None) -> np.ndarray:
    """The labels of a block read with a label column (`_read` yields None without one)."""
    if y is None:
        raise ValueError("no label column was read")
    return y


def _read(
    shards: Sequence[Path], features: list[str], label: str | None, read_rows: int
) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """Record batches of up to `read_rows` rows, shard by shard, as (x float32, raw y)."""
    columns = [*features, label] if label else list(features)
    for shard in shards:
        for batch in _record_batches(shard, columns, read_rows):
            # Arrow columns straight to one float32 matrix: no pandas frame in between.
            x = np.empty((batch.num_rows, len(features)), dtype="float32")
            for i, name in enumerate(features):
                x[:, i] = batch.column(name).to_numpy(zero_copy_only=False)
            y = batch.column(label).to_numpy(zero_copy_only=False) if label else None
            yield x, y


def _load_shard(shard: Path, features: list[str], label: str) -> tuple[np.ndarray, np.ndarray]:
    """One shard's features (float32) and labels, read into arrays sized from its footer."""
    x = np.empty((row_count([shard]), len(features)), dtype="float32")
    labels, start = [], 0
    for block, y in _read([shard], features, label, READ_ROWS):
        x[start : start + len(block)] = block
        labels.append(_present(y))
        start += len(block)
    return x, np.concatenate(labels)


def _shuffled_shards(
    shards: Sequence[Path], features: list[str], label: str, rng: np.random.Generator
) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """Whole shards in a random order, each one's rows in a random order, as blocks of
    `READ_ROWS` gathered rows: one shard is in memory at a time, with no shuffled copy."""
    for i in rng.permutation(len(shards)):
        x, y = _load_shard(shards[i], features, label)
        order = rng.permutation(len(x))
        for start in range(0, len(order), READ_ROWS):
            rows = order[start : start + READ_ROWS]
            yield x[rows], y[rows]
        del x, y  # free this shard before the next one is read


def shard_dataset(
    shards: Sequence[Path],
    features: list[str],
    label: str,
    batch_rows: int = 4096,
    encode: Callable[[np.ndarray], np.ndarray] = lambda y: y.astype("int64"),
    shuffle_seed: int | None = None,
) -> Any:
    """A `tf.data.Dataset` of (x float32, encode(y)) batches of `batch_rows` streamed from the
    shards, prefetched. With `shuffle_seed`, every pass reads the shards in a new order and
    shuffles each one's rows (one shard in memory at a time); the orders depend only on the
    seed and the pass number, so training is repeatable.

    Python hands over blocks of `READ_ROWS` rows and `tf.data` cuts them into batches
    (`rebatch`, carrying rows across blocks like numpy feeding): one Python call per block
    instead of one per batch leaves the cores to training."""
    import tensorflow as tf

    passes = iter(range(1 << 30))

    def generate() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        if shuffle_seed is None:
            blocks = _read(shards, features, label, max(READ_ROWS, batch_rows))
        else:
            rng = np.random.default_rng([shuffle_seed, next(passes)])
            blocks = _shuffled_shards(shards, features, label, rng)
        for x, y in blocks:
            yield x, encode(_present(y))

    signature = (
        tf.TensorSpec(shape=(None, len(features)), dtype=tf.float32),
        tf.TensorSpec(shape=(None,), dtype=tf.int64),
    )
    batches = math.ceil(row_count(shards) / batch_rows)
    dataset = tf.data.Dataset.from_generator(generate, output_signature=signature)
    return (
        dataset.rebatch(batch_rows)
        .apply(tf.data.experimental.assert_cardinality(batches))
        .prefetch(tf.data.AUTOTUNE)
    )


def predict_shards(
    predict: Callable[[np.ndarray], Any],
    shards: Sequence[Path],
    features: list[str],
    label: str,
    batch_rows: int = READ_ROWS,
) -> tuple[np.ndarray, np.ndarray]:
    """(predictions float64, raw labels) over every row of the shards, in file order, one
    record batch of up to `batch_rows` rows in memory at a time besides the outputs."""
    outputs, labels = [], []
    for x, y in _read(shards, features, label, batch_rows):
        outputs.append(np.asarray(predict(x), dtype="float64"))
        labels.append(_present(y))
    return np.concatenate(outputs), np.concatenate(labels)


def label_counts(shards: Sequence[Path], label: str) -> dict[Any, int]:
    """How often each label value occurs, reading only the label column."""
    counts: dict[Any, int] = {}
    for _, frame in iter_frames(shards, [label]):
        for value, n in frame[label].value_counts().items():
            key = value.item() if hasattr(value, "item") else value
            counts[key] = counts.get(key, 0) + int(n)
    return counts


def take_rows(
    shards: Sequence[Path], features: list[str], label: str, positions: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Rows at the sorted global `positions` (file order) as (x float64, raw y)."""
    xs, ys, start = [], [], 0
    for x, y in _read(shards, features, label, READ_ROWS):
        end = start + len(x)
        lo, hi = np.searchsorted(positions, [start, end])
        if hi > lo:
            local = positions[lo:hi] - start
            xs.append(x[local].astype("float64"))
            ys.append(_present(y)[local])
        start = end
    if not xs:
        return np.empty((0, len(features))), np.empty(0)
    return np.concatenate(xs), np.concatenate(ys)


def synthesize_shards(
    base: pd.DataFrame, label: str, out: Path, shards: int, rows_per_shard: int, noise: float
) -> list[Path]:
    """A large table made from a small real one: `shards` Parquet files of `rows_per_shard`
    rows resampled from `base`, every feature multiplied by 1 + N(0, `noise`). Shard `i` uses
    seed `i`; existing files are kept."""
    out.mkdir(parents=True, exist_ok=True)
    features = [c for c in base.columns if c != label]
    paths = []
    for i in range(shards):
        path = out / f"part-{i:02d}.parquet"
        paths.append(path)
        if path.exists():
            continue
        rng = np.random.default_rng(i)
        part = base.iloc[rng.integers(0, len(base), rows_per_shard)].reset_index(drop=True)
        part[features] = part[features].to_numpy() * rng.normal(
            1, noise, (len(part), len(features))
        )
        tmp = path.with_suffix(".tmp")
        part.to_parquet(tmp, index=False, row_group_size=100_000)
        tmp.rename(path)
        log.info(f"wrote {path} ({rows_per_shard:,} rows)")
    return paths
