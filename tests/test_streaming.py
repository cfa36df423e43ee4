"""Streaming from Parquet shards gives the same rows and statistics as loading them whole."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.data import streaming
from pipelines.data.streaming import shard_dataset, stream_normalization


@pytest.fixture
def shards(breast_cancer, tmp_path):
    paths = []
    for i, rows in enumerate(np.array_split(np.arange(len(breast_cancer)), 3)):
        paths.append(tmp_path / f"part-{i}.parquet")
        breast_cancer.iloc[rows].to_parquet(paths[-1], index=False, row_group_size=50)
    return paths


def test_every_row_arrives_once_in_order(breast_cancer, shards):
    features = [c for c in breast_cancer.columns if c != "target"]
    batches = list(shard_dataset(shards, features, "target", batch_rows=64))
    x = np.concatenate([b[0].numpy() for b in batches])
    y = np.concatenate([b[1].numpy() for b in batches])
    np.testing.assert_array_equal(x, breast_cancer[features].to_numpy("float32"))
    np.testing.assert_array_equal(y, breast_cancer["target"].to_numpy())
    # Full batches across record-batch and shard ends (190 rows a shard), as numpy feeding.
    assert [len(b[0]) for b in batches] == [64] * 8 + [569 - 8 * 64]


@pytest.mark.parametrize("read_rows", [100, 1000])
def test_batches_are_full_whatever_the_read_size(breast_cancer, shards, read_rows, monkeypatch):
    monkeypatch.setattr(streaming, "READ_ROWS", read_rows)
    features = [c for c in breast_cancer.columns if c != "target"]
    batches = [(x.numpy(), y.numpy()) for x, y in shard_dataset(shards, features, "target", 48)]
    assert [len(x) for x, _ in batches] == [48] * 11 + [569 - 11 * 48]
    np.testing.assert_array_equal(
        np.concatenate([y for _, y in batches]), breast_cancer["target"].to_numpy()
    )


def test_streaming_statistics_match_the_in_memory_ones(breast_cancer, shards):
    from pipelines.data.preprocessing import fit_normalization

    features = [c for c in breast_cancer.columns if c != "target"]
    streamed = stream_normalization(shards, features, read_rows=100)
    whole = fit_normalization(breast_cancer[features].to_numpy())
    np.testing.assert_allclose(streamed["mean"], whole["mean"], rtol=1e-12)
    np.testing.assert_allclose(streamed["variance"], whole["variance"], rtol=1e-10)


def test_a_shard_missing_a_column_is_named(breast_cancer, shards):
    breast_cancer.drop(columns=["mean_area"]).to_parquet(shards[1], index=False)
    features = [c for c in breast_cancer.columns if c != "target"]
    with pytest.raises(ValueError, match=r"part-1\.parquet: missing column\(s\) \['mean_area'\]"):
        stream_normalization(shards, features)


_MANY_SHARDS = """
import resource, sys
import numpy as np, pandas as pd
from pathlib import Path
from pipelines.data import streaming

resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
out = Path(sys.argv[1])
writer = streaming.ShardWriter(out, 2000)
rng = np.random.default_rng(0)
for start in range(0, 200_000, 50_000):
    frame = pd.DataFrame({"id": np.arange(start, start + 50_000), "x": rng.random(50_000)})
    writer.scatter(frame, rng)
    assert writer.buffered_rows <= streaming.BUFFER_ROWS
print(writer.close())
"""


def test_a_split_into_2000_shards_runs_under_256_open_files(tmp_path):
    """Writers are never held open per shard: 2000 shards under `ulimit -n 256`, every row
    once, and each shard keeps the order its rows arrived in."""
    import subprocess
    import sys

    import pandas as pd

    out = tmp_path / "train.parquet"
    proc = subprocess.run(
        [sys.executable, "-c", _MANY_SHARDS, str(out)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "200000"
    shards = streaming.shard_paths(out)
    assert len(shards) == 2000
    ids = [pd.read_parquet(shard)["id"].to_numpy() for shard in shards]
    assert all((np.diff(part) > 0).all() for part in ids)
    np.testing.assert_array_equal(np.sort(np.concatenate(ids)), np.arange(200_000))
    assert not list(out.glob(".*"))  # no part files left
