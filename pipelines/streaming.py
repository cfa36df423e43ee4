"""Training data that does not fit in memory: Parquet shards streamed through `tf.data`.

`shard_dataset` reads record batches from a list of Parquet files (one at a time, never a whole
file) and yields `(features, label)` batches; `adapt_normalization` fits a Keras
`Normalization` layer in one streaming pass over the same shards. Memory stays bounded by a few
record batches, whatever the number of rows.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

READ_ROWS = 65_536


def _read(
    shards: Sequence[Path], features: list[str], label: str | None, read_rows: int
) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """Record batches of up to `read_rows` rows, shard by shard, as (x float32, y int64)."""
    import pyarrow.parquet as pq

    columns = [*features, label] if label else list(features)
    for shard in shards:
        parquet = pq.ParquetFile(shard)
        missing = [c for c in columns if c not in parquet.schema_arrow.names]
        if missing:
            raise ValueError(f"{shard}: missing column(s) {missing}")
        for batch in parquet.iter_batches(batch_size=read_rows, columns=columns):
            # Arrow columns straight to one float32 matrix: no pandas frame in between.
            x = np.empty((batch.num_rows, len(features)), dtype="float32")
            for i, name in enumerate(features):
                x[:, i] = batch.column(name).to_numpy(zero_copy_only=False)
            y = None
            if label:
                y = batch.column(label).to_numpy(zero_copy_only=False).astype("int64")
            yield x, y


def iter_batches(
    shards: Sequence[Path],
    features: list[str],
    label: str | None,
    batch_rows: int,
    read_rows: int = READ_ROWS,
) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """(x float32 (n, features), y int64 (n,)) batches of exactly `batch_rows` rows (the last
    one may be shorter), in file order: the batches numpy feeding makes with shuffle off.

    Parquet is decoded in large record batches (`read_rows`), then sliced: decoding 4,096 rows
    at a time costs about four times more CPU per row than 65,536 at a time, CPU that training
    needs on a small machine. Rows left over at the end of a read carry into the next batch."""
    carry_x: np.ndarray | None = None
    carry_y: np.ndarray | None = None
    for x, y in _read(shards, features, label, max(read_rows, batch_rows)):
        if carry_x is not None:
            x = np.concatenate([carry_x, x])
            y = None if y is None else np.concatenate([carry_y, y])
        full = len(x) - len(x) % batch_rows
        for start in range(0, full, batch_rows):
            yield (
                x[start : start + batch_rows],
                None if y is None else y[start : start + batch_rows],
            )
        carry_x, carry_y = (
            (x[full:], None if y is None else y[full:]) if full < len(x) else (None, None)
        )
    if carry_x is not None:
        yield carry_x, carry_y


def shard_dataset(
    shards: Sequence[Path], features: list[str], label: str, batch_rows: int = 4096
) -> Any:
    """A `tf.data.Dataset` of (x, y) batches streamed from the shards, prefetched."""
    import tensorflow as tf

    def generate() -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        yield from iter_batches(shards, features, label, batch_rows)

    signature = (
        tf.TensorSpec(shape=(None, len(features)), dtype=tf.float32),
        tf.TensorSpec(shape=(None,), dtype=tf.int64),
    )
    return tf.data.Dataset.from_generator(generate, output_signature=signature).prefetch(
        tf.data.AUTOTUNE
    )


def adapt_normalization(
    shards: Sequence[Path], features: list[str], batch_rows: int = 65_536
) -> dict[str, list[float]]:
    """Mean and variance of every feature in one streaming pass (Keras `Normalization.adapt`
    over a dataset), as `preprocessing.json` stores them."""
    import keras
    import tensorflow as tf

    def generate() -> Iterator[np.ndarray]:
        for x, _ in _read(shards, features, None, batch_rows):
            yield x

    dataset = tf.data.Dataset.from_generator(
        generate, output_signature=tf.TensorSpec(shape=(None, len(features)), dtype=tf.float32)
    )
    layer = keras.layers.Normalization(axis=-1)
    layer.adapt(dataset)
    return {
        "mean": np.asarray(layer.mean).reshape(-1).astype(float).tolist(),
        "variance": np.asarray(layer.variance).reshape(-1).astype(float).tolist(),
    }
