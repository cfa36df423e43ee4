"""Training past memory: Parquet shards streamed with `tf.data` against in-memory numpy.

Usage: .venv/bin/python bench/scale.py [--dir /tmp/pipelines-scale] [--repeats 3]

Synthesizes 16 shards of 1M rows each by resampling the real breast-cancer rows with 1%
multiplicative noise (written once, reused). For 1M, 4M and 16M rows it trains the tabular DNN
of params.yaml for one epoch (batch 4096) in a fresh process per case:
  streaming: normalization statistics merged in one streaming pass, then `fit` on
  `shard_dataset`;
  in memory: the shards read into one numpy array, statistics and `fit` from it.
It prints rows per second of `fit`, seconds of the statistics pass and the process's peak RSS,
medians over `repeats` runs (the cases alternate, so drift in the machine's speed hits both),
the streaming/in-memory throughput ratio per size, and the growth of peak RSS from the
smallest to the largest size.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROWS_PER_SHARD = 1_000_000
SIZES = (1, 4, 16)  # millions of rows
CHILD = r"""
import json, sys, time
from pathlib import Path
import numpy as np, pandas as pd
mode, shards = sys.argv[1], [Path(p) for p in sys.argv[2:]]
from pipelines.model.builders import build_model
from pipelines.model_config import TrainConfig
from pipelines.data.preprocessing import Preprocessing, fit_normalization
from pipelines.data.streaming import shard_dataset, stream_normalization
from pipelines.model.training import seed_everything
import pyarrow.parquet as pq
features = [c for c in pq.ParquetFile(shards[0]).schema_arrow.names if c != "target"]
seed_everything(42)
start = time.perf_counter()
if mode == "streaming":
    stats = stream_normalization(shards, features)
else:
    table = pd.concat([pd.read_parquet(s) for s in shards], ignore_index=True)
    x, y = table[features].to_numpy("float32"), table["target"].to_numpy("int64")
    del table
    stats = fit_normalization(x)
adapt_s = time.perf_counter() - start
prep = Preprocessing("tabular", features, "target", [0, 1], [len(features)], stats)
model = build_model("dnn", {"units": [32], "activation": "tanh", "dropout": 0.3, "l2": 0.003},
                    prep, TrainConfig(batch_size=4096))
rows = len(shards) * 1_000_000
start = time.perf_counter()
if mode == "streaming":
    model.fit(shard_dataset(shards, features, "target", 4096), epochs=1, verbose=0)
else:
    model.fit(x, y, batch_size=4096, epochs=1, verbose=0, shuffle=False)
fit_s = time.perf_counter() - start
hwm = [l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith("VmHWM")]
print(json.dumps({"rows": rows, "adapt_s": adapt_s, "fit_s": fit_s,
                  "peak_rss_mb": int(hwm[0].split()[1]) / 1024}))
"""


def synthesize(folder: Path, shards: int) -> list[Path]:
    from pipelines.data.datasets import load_source
    from pipelines.data.streaming import synthesize_shards

    base = load_source("sklearn:breast_cancer")
    return synthesize_shards(base, "target", folder, shards, ROWS_PER_SHARD, noise=0.01)


def run_case(mode: str, shards: list[Path]) -> dict:
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", CHILD, mode, *map(str, shards)],
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result.update(mode=mode, wall_s=time.perf_counter() - start)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", type=Path, default=Path("/tmp/pipelines-scale"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    shards = synthesize(args.dir, max(SIZES))
    runs: dict[tuple[int, str], list[dict]] = {}
    for _ in range(args.repeats):
        for size in SIZES:
            for mode in ("streaming", "in memory"):
                result = run_case(mode, shards[:size])
                runs.setdefault((size, mode), []).append(result)
                print(json.dumps(result), flush=True)
    med = statistics.median
    print(
        f"\nMedians of {args.repeats} runs:\n\n"
        "| rows | mode | fit rows/s | streaming / in memory | stats pass (s) | peak RSS (MiB) |\n"
        "| --- | --- | --- | --- | --- | --- |"
    )
    rate = {key: med([r["rows"] / r["fit_s"] for r in rs]) for key, rs in runs.items()}
    rss = {key: med([r["peak_rss_mb"] for r in rs]) for key, rs in runs.items()}
    for (size, mode), rs in runs.items():
        ratio = rate[(size, "streaming")] / rate[(size, "in memory")]
        print(
            f"| {rs[0]['rows']:,} | {mode} | {rate[(size, mode)]:,.0f} | "
            f"{f'{ratio:.2f}' if mode == 'streaming' else ''} | "
            f"{med([r['adapt_s'] for r in rs]):.1f} | {rss[(size, mode)]:,.0f} |"
        )
    for mode in ("streaming", "in memory"):
        growth = rss[(max(SIZES), mode)] / rss[(min(SIZES), mode)] - 1
        print(f"\npeak RSS growth {min(SIZES)}M -> {max(SIZES)}M rows, {mode}: {growth:+.1%}")
    spread = {
        key: (min(r["rows"] / r["fit_s"] for r in rs), max(r["rows"] / r["fit_s"] for r in rs))
        for key, rs in runs.items()
    }
    print("\nfit rows/s range over the runs:")
    for (size, mode), (low, high) in spread.items():
        print(f"- {size}M {mode}: {low:,.0f} to {high:,.0f}")


if __name__ == "__main__":
    from pipelines.console import show_messages

    show_messages()  # the library's progress lines, as the CLI shows them
    main()
