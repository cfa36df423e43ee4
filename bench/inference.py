"""Inference: the registered pyfunc model on raw rows against the bare Keras network on rows
normalized beforehand, and single-request latency through `mlflow models serve`.

Usage, in a project after `make run` (uses `models:/tabular-dnn@champion`):
    .venv/bin/python bench/inference.py [repeats]

Throughput: median over `repeats` (default 5) of rows per second at batch sizes 1, 32, 1024 and
65,536 (raw rows resampled from the real test split; each repeat calls the model for at least
0.5 s). The wrapper scores with Keras' `predict_on_batch` in chunks of 4,096 rows
(`pipelines/registry/raw_model.py`). Two baselines on rows normalized beforehand: the bare
network called the same way (so the ratio is the wrapper's own cost: MLflow's pyfunc layer,
request checks and the Normalization layer), and the bare network's plain `predict` (what a
script would call). Latency: 200 single-row requests over HTTP, p50 and p99.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.environment import env_with_venv, executable
from pipelines.orchestration.local_server import free_port, wait_until_answers

MODEL = "tabular-dnn"
BATCHES = (1, 32, 1024, 65_536)


def _bare_network(model):
    """The same layers after the Normalization layer, as a model of its own."""
    import keras

    names = [layer.name for layer in model.layers]
    start = names.index("normalize") + 1
    x = inputs = keras.Input(shape=model.input_shape[1:])
    for layer in model.layers[start:]:
        x = layer(x)
    return keras.Model(inputs, x)


def _rate(fn, x: np.ndarray, min_seconds: float = 0.5) -> float:
    """Rows per second of `fn(x)`, called again and again for at least `min_seconds` (a
    single call of a small batch takes about a millisecond: too short to time alone)."""
    calls, start = 0, time.perf_counter()
    while True:
        fn(x)
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return calls * len(x) / elapsed


def _median_rates(fns: list, inputs: list[np.ndarray], repeats: int) -> list[float]:
    """Median rows/s of each `fn` on its input; the variants take turns in every repeat, so
    a change in the machine's speed hits them alike."""
    for fn, x in zip(fns, inputs, strict=True):
        fn(x[:1])  # warm up: graph tracing for both shapes
        fn(x)
    rates: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for i, (fn, x) in enumerate(zip(fns, inputs, strict=True)):
            rates[i].append(_rate(fn, x))
    return [statistics.median(r) for r in rates]


def throughput(repeats: int) -> list[tuple[int, float, float, float]]:
    import keras
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{Path.cwd() / 'mlflow.db'}")
    pyfunc = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    meta = pyfunc.metadata.metadata
    model = keras.saving.load_model(f"models/{MODEL}/model.keras", safe_mode=True)
    bare = _bare_network(model)
    prep = json.loads(Path("data/processed/breast_cancer/preprocessing.json").read_text())
    mean, std = np.asarray(prep["stats"]["mean"]), np.sqrt(prep["stats"]["variance"])
    test = pd.read_parquet("data/processed/breast_cancer/test.parquet")[meta["features"]]
    rng = np.random.default_rng(0)
    from pipelines.registry.raw_model import CHUNK_ROWS

    def chunked(x: np.ndarray) -> np.ndarray:
        return np.concatenate(
            [bare.predict_on_batch(x[i : i + CHUNK_ROWS]) for i in range(0, len(x), CHUNK_ROWS)]
        )

    rows = []
    for batch in BATCHES:
        raw = test.to_numpy("float64")[rng.integers(0, len(test), batch)]
        normalized = ((raw - mean) / np.maximum(std, 1e-7)).astype("float32")
        wrapped, same_way, plain = _median_rates(
            [pyfunc.predict, chunked, lambda x: bare.predict(x, verbose=0)],
            [raw, normalized, normalized],
            repeats,
        )
        rows.append((batch, wrapped, same_way, plain))
    return rows


def latency(requests: int = 200) -> tuple[float, float]:
    port = free_port()
    server = subprocess.Popen(
        [executable("pipelines"), "serve", f"{MODEL}@champion", "--port", str(port)],
        env=env_with_venv(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_answers(f"{base}/ping", server, 300)
        test = pd.read_parquet("data/processed/breast_cancer/test.parquet").drop(columns="target")
        body = json.dumps({"inputs": test.to_numpy("float64")[:1].tolist()}).encode()
        times = []
        for i in range(requests + 10):
            request = urllib.request.Request(
                f"{base}/invocations", body, {"Content-Type": "application/json"}
            )
            start = time.perf_counter()
            urllib.request.urlopen(request, timeout=30).read()
            if i >= 10:  # the first requests warm the server up
                times.append(time.perf_counter() - start)
        return float(np.percentile(times, 50)), float(np.percentile(times, 99))
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def main(repeats: int = 5) -> None:
    print(
        f"Medians of {repeats} runs, rows/s.\n\n"
        "| batch rows | pyfunc on raw rows | bare Keras, same calls | ratio "
        "| bare Keras `predict` | ratio |\n| --- | --- | --- | --- | --- | --- |"
    )
    for batch, wrapped, same_way, plain in throughput(repeats):
        print(
            f"| {batch:,} | {wrapped:,.0f} | {same_way:,.0f} | {wrapped / same_way:.2f} "
            f"| {plain:,.0f} | {wrapped / plain:.2f} |"
        )
    p50, p99 = latency()
    print(
        f"\nsingle-row request through `mlflow models serve`: p50 {p50 * 1000:.1f} ms, "
        f"p99 {p99 * 1000:.1f} ms (200 requests)"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
