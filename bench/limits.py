"""Limits that must hold at scale and under races, in a project after a full run.

Usage: .venv/bin/python bench/limits.py [--score-rows 10000000] [--tries 10]

shards: a split of 2,000,000 rows into 2,000 shards (`ShardWriter.scatter`, as the split stage
  does) in a process limited to 256 open files (`ulimit -n 256`); its peak RSS.
gate: the champion comparison (paired bootstrap, 2,000 resamples) on 1,000,000 comparison rows;
  its peak RSS.
score: `pipelines score tabular-dnn@champion` on files of 1M and of `--score-rows` raw rows
  (resampled real breast-cancer rows); peak RSS of each: flat means the same at both sizes.
races: the concurrency tests with `--tries` tries each: two registrations of one model at once
  (every promotion compared with the version it replaced, one champion, nothing in flight
  tagged incomplete), and two Prefect server starts at once (one server); and the validate
  stage with the MLflow server stopped (a clear failure).
Each measurement runs in its own process; peak RSS is that process's `ru_maxrss`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pipelines.environment import env_with_venv

ENV = env_with_venv()

_SHARDS = """
import resource, sys
import numpy as np, pandas as pd
from pathlib import Path
from pipelines.data import streaming
resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
writer = streaming.ShardWriter(Path(sys.argv[1]), 2000)
rng = np.random.default_rng(0)
for start in range(0, 2_000_000, 100_000):
    frame = pd.DataFrame(rng.random((100_000, 30)), columns=[f"f{i}" for i in range(30)])
    writer.scatter(frame, rng)
print(writer.close(), "rows in", len(streaming.shard_paths(Path(sys.argv[1]))), "shards")
"""

_GATE = """
import numpy as np
from pipelines.registry.promotion import non_inferiority_check
rng = np.random.default_rng(0)
n = 1_000_000
y = rng.integers(0, 2, n)
champion = np.clip(np.eye(2)[y] * 0.8 + rng.random((n, 2)) * 0.3, 0, None)
champion /= champion.sum(axis=1, keepdims=True)
challenger = champion.copy()
flip = rng.random(n) < 0.001
challenger[flip] = challenger[flip][:, ::-1]
check = non_inferiority_check("accuracy", y, champion, challenger, 0.02, 0.05, 2000, 42)
print(check.passed, check.detail[:300])
"""


_PEAK = """
import resource, subprocess, sys
code = subprocess.run(sys.argv[1:]).returncode
print("PEAK_KIB", resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)
sys.exit(code)
"""


def _child(command: list[str]) -> tuple[float, float, str]:
    """(seconds, peak RSS in GiB, output) of one command, run in its own wrapper process so
    that its peak is its own."""
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", _PEAK, *command], capture_output=True, text=True, env=ENV
    )
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(command[:4])} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    peak = next(
        int(line.split()[1]) for line in proc.stderr.splitlines() if line.startswith("PEAK_KIB")
    )
    return seconds, peak / 2**20, proc.stdout.strip()


def shards() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        seconds, rss, out = _child([sys.executable, "-c", _SHARDS, f"{tmp}/train.parquet"])
    print(f"shards: {out} under ulimit -n 256 in {seconds:.1f} s, peak RSS {rss:.2f} GiB")


def gate() -> None:
    seconds, rss, out = _child([sys.executable, "-c", _GATE])
    print(f"gate: 1,000,000 comparison rows in {seconds:.1f} s, peak RSS {rss:.2f} GiB: {out}")


def _score_input(path: Path, rows: int) -> None:
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipelines.data.datasets import BUILTIN_SOURCES

    table = BUILTIN_SOURCES["sklearn:breast_cancer"]().drop(columns=["target"])
    rng = np.random.default_rng(0)
    with pq.ParquetWriter(path, pa.Schema.from_pandas(table, preserve_index=False)) as writer:
        for start in range(0, rows, 500_000):
            take = rng.integers(0, len(table), min(500_000, rows - start))
            part = pd.DataFrame(table.to_numpy()[take], columns=table.columns)
            writer.write_table(pa.Table.from_pandas(part, preserve_index=False))


def score(rows_big: int) -> None:
    cli = [str(Path(sys.executable).with_name("pipelines")), "score", "tabular-dnn@champion"]
    with tempfile.TemporaryDirectory() as tmp:
        for rows in (1_000_000, rows_big):
            path = Path(tmp) / f"raw-{rows}.parquet"
            _score_input(path, rows)
            size = path.stat().st_size / 2**30
            seconds, rss, _ = _child([*cli, "--input", str(path), "--chunk-rows", "65536"])
            print(
                f"score: {rows:,} rows ({size:.2f} GiB Parquet) in {seconds:.1f} s, "
                f"{rows / seconds:,.0f} rows/s, peak RSS {rss:.2f} GiB"
            )
            path.unlink()
            path.with_name(f"{path.stem}.predictions.parquet").unlink()


def races(tries: int) -> None:
    tests = {
        "two registrations of one model at once": "tests/test_registry.py::"
        "test_two_registrations_of_one_model_at_once_never_skip_a_comparison",
        "two Prefect server starts at once": "tests/test_local_server.py::"
        "test_two_stages_starting_the_prefect_server_at_once_start_one",
        "validate with the MLflow server stopped": "tests/test_storage.py::"
        "test_validate_with_the_store_down_fails_naming_it_never_passes_silently",
    }
    env = {**ENV, "PIPELINES_RACE_TRIES": str(tries)}
    for what, test in tests.items():
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", test],
            capture_output=True,
            text=True,
            env=env,
        )
        tail = proc.stdout.strip().splitlines()[-1:]
        counted = (
            f"{tries} of {tries} tries correct" if "tries" in what or "at once" in what else ""
        )
        verdict = counted if proc.returncode == 0 else f"FAILED: {tail}"
        if "stopped" in what:
            verdict = "a clear failure (fail mode) and a named warning (warn mode)"
            verdict = verdict if proc.returncode == 0 else f"FAILED: {tail}"
        print(f"races: {what}: {verdict} ({time.perf_counter() - start:.0f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--score-rows", type=int, default=10_000_000)
    parser.add_argument("--tries", type=int, default=10)
    parser.add_argument("--only", default="shards,gate,score,races")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    steps = args.only.split(",")
    if "shards" in steps:
        shards()
    if "gate" in steps:
        gate()
    if "score" in steps:
        score(args.score_rows)
    if "races" in steps:
        races(args.tries)


if __name__ == "__main__":
    main()
