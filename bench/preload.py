"""What a preloaded parent process (the stage server, `pipelines.orchestration.stage_server`)
saves: the imports each stage pays in a fresh interpreter, against a child forked from a parent
that already has them. (`python -X importtime` runs a stage in its own interpreter: the server
stands in only for an interpreter with the same flags as its own.)

1. Each stage's imports, as it runs: one stage of each kind from `dvc.lock`, run as DVC runs
   it, under `python -X importtime`; the sum of its top-level imports.
2. What a forked child still pays: a fork and exit from a parent that imported the stack, and
   what preloading TensorFlow saves: Keras with TensorFlow imported in a child of a parent
   without them (the server loads them, but never runs them).
3. Whether forking is safe: the threads the preloaded parent has, Python's and the native
   ones (importing TensorFlow and Keras must start none: their thread pools start with the
   first operation, in the child), and whether Prefect sees an API URL set after its import
   (it reads its settings once, at import, so a stage forked from the server reads them
   again: `cli._call_stage`).

The estimate for `dvc.yaml` takes `register` and `tune` to import what `train` does (TensorFlow
and MLflow; `evaluate` imports no TensorFlow), and leaves out `register`'s fresh scorer, which
must stay a clean interpreter. Run in a project after `make run` (it reruns the stages it measures):
    python bench/preload.py [N]
"""

from __future__ import annotations

import importlib
import os
import re
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import yaml

from pipelines.orchestration.stage_server import RUNTIMES, native_threads

STAGES = (
    "ingest@breast_cancer",
    "validate@breast_cancer",
    "split@breast_cancer",
    "train@tabular-dnn",
    "evaluate@tabular-dnn",
)
LIKE = {"register": "train", "tune": "train"}  # kinds not run here: import what these do
STACK = (
    "import pipelines.cli, pandas, pyarrow.parquet, mlflow, "
    "mlflow.store.tracking.sqlalchemy_store, prefect, great_expectations"
)
_LINE = re.compile(r"import time:\s+\d+ \|\s+(\d+) \| (\S.*)")


def stage_imports(command: str) -> float:
    """Seconds of top-level imports of one stage command (`python -m ...`)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    traced = command.replace("python -m", f"{sys.executable} -X importtime -m", 1)
    done = subprocess.run(traced, shell=True, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{command} failed:\n{done.stderr[-2000:]}")
    top = [_LINE.match(line) for line in done.stderr.splitlines()]
    return sum(int(m.group(1)) for m in top if m and not m.group(2).startswith(" ")) / 1e6


def _forked(code: str) -> float:
    """Fork this (preloaded) process; the child runs `code` and exits at once."""
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        exec(code)
        os._exit(0)
    os.waitpid(pid, 0)
    return time.perf_counter() - start


def _safety() -> None:
    """What a child forked from the preloaded parent would inherit: threads (none may run at a
    fork), and Prefect's settings, which Prefect reads once, at import."""
    import threading

    from prefect.settings import PREFECT_API_URL

    print(f"threads in the preloaded parent: {[t.name for t in threading.enumerate()]}")
    os.environ["PREFECT_API_URL"] = "http://127.0.0.1:4299/api"  # as a stage's environment
    seen = PREFECT_API_URL.value()
    del os.environ["PREFECT_API_URL"]
    print(f"PREFECT_API_URL set after the import, as Prefect sees it: {seen!r}")


def main(runs: int = 3) -> None:
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    lock = yaml.safe_load(Path("dvc.lock").read_text())["stages"]
    imports = {}
    for stage in STAGES:
        times = [stage_imports(lock[stage]["cmd"]) for _ in range(runs)]
        imports[stage.split("@")[0]] = statistics.median(times)
        print(f"{stage:24s} imports, median {imports[stage.split('@')[0]]:5.2f} s  {times}")
    os.environ.pop("PREFECT_API_URL", None)
    exec(STACK)  # this process becomes the preloaded parent
    _safety()
    fork_tf = statistics.median(_forked(f"import {', '.join(RUNTIMES)}") for _ in range(runs))
    native = native_threads()
    for name in RUNTIMES:  # as the server preloads them
        importlib.import_module(name)
    started = native_threads() - native
    print(f"native threads started by importing TensorFlow and Keras: {started} (must be 0)")
    fork = statistics.median(_forked(STACK) for _ in range(runs))
    print(
        f"a forked child: {fork:.3f} s to fork and exit; preloading TensorFlow saves "
        f"{fork_tf:.2f} s a stage that imports it"
    )
    kinds = Counter(name.split("@")[0] for name in lock)
    saved = 0.0
    for kind, count in sorted(kinds.items()):
        paid = imports[LIKE.get(kind, kind)]
        saved += count * (paid - fork)
        print(f"  {kind:9s} x{count:2d}: {paid:5.2f} s of imports now, {fork:5.2f} s forked")
    print(f"a fork server would save about {saved:.0f} s over the {sum(kinds.values())} stages")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
