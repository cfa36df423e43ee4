"""Hyperparameter search against its alternatives, side by side on the same points.

For each N (default 12 and 24), in one process after one TensorFlow import:
  1. the tune stage's search: N trials of `tabular-dnn` (learning rate, units, dropout), no
     pruning, a fixed epoch budget, with its MLflow parent run, nested trial runs and plots;
  2. a bare Python loop over the same N points: seed, build, fit, clear the session; no
     tracking. The ratio search / loop is the search's overhead (goal: <= 1.25).
Peak RSS is read after every trial of the search: its growth after the first trial says
whether TensorFlow leaks across fits (goal: < 20%).

Then, with `--dvc N` (default 12), the first N points as `dvc exp run --queue` experiments run
by `dvc queue start -j 1`: one experiment per point (train, evaluate, register, each its own
process), in this project. The speedup is its wall time over the search's.

Usage, in a project after `make run` (it writes to its MLflow store and DVC experiments):
    .venv/bin/python bench/search.py [--trials 12,24] [--dvc 12] [--epochs 40]
"""

from __future__ import annotations

import argparse
import copy
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

NAME = "tabular-dnn"


def rss_gib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def current_rss_gib() -> float:
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**30


def search_params(raw: dict, trials: int, epochs: int) -> dict:
    params = copy.deepcopy(raw)
    params["search"] = {
        NAME: {
            "dataset": params["models"][NAME]["dataset"],
            "trials": trials,
            "max_epochs": epochs,
            "pruner": "none",
            "metric": "val_loss",
            "start_from_params": False,
            "space": {
                "train.learning_rate": {"low": 0.0005, "high": 0.02, "log": True},
                "model.units": {"choices": [16, 32, 64]},
                "model.dropout": {"low": 0.0, "high": 0.5},
            },
        }
    }
    return params


def run_search(params_path: Path, out: Path) -> tuple[dict, float, list[float]]:
    """The tune stage's own function, with RSS read after every trial."""
    from pipelines.config import load_config
    from pipelines.orchestration import tuning

    cfg = load_config(params_path)
    readings: list[float] = []
    original = tuning.progress_line

    def reading(trial, total, study):  # the search prints one line per trial: read RSS there
        readings.append(current_rss_gib())
        return original(trial, total, study)

    tuning.progress_line = reading
    try:
        started = time.perf_counter()
        model = cfg.model(NAME)
        result = tuning.tune(cfg, model, Path(cfg.paths.processed) / model.dataset, out)
        return result, time.perf_counter() - started, readings
    finally:
        tuning.progress_line = original


def run_loop(params_path: Path, points: list[dict], epochs: int) -> float:
    """The same points, trained in a bare loop: what a hand-written script would do."""
    import gc

    import keras

    from pipelines.config import load_config
    from pipelines.model.search import overrides
    from pipelines.model.training import TrainingData, fit_model

    cfg = load_config(params_path)
    started = time.perf_counter()
    data = TrainingData.load(Path(cfg.paths.processed) / cfg.entry(NAME).dataset)
    for point in points:
        changes = {**overrides(cfg, NAME, point), "train.max_epochs": epochs}
        tuned = cfg.with_overrides(NAME, changes)
        fit_model(tuned, tuned.model(NAME), data, verbose=0)
        keras.backend.clear_session()
        gc.collect()
    return time.perf_counter() - started


def run_dvc(points: list[dict], epochs: int) -> float:
    """The points as queued DVC experiments, run one at a time."""
    dvc = str(Path(sys.executable).with_name("dvc"))
    for point in points:
        sets = [f"models.{NAME}.train.max_epochs={epochs}"]
        for key, value in point.items():
            value = [value] if key == "model.units" else value
            sets.append(f"models.{NAME}.{key}={value}")
        args = [dvc, "exp", "run", "--queue"] + [a for s in sets for a in ("-S", s)]
        subprocess.run(args, check=True, capture_output=True)
    started = time.perf_counter()
    subprocess.run([dvc, "queue", "start", "-j", "1"], check=True, capture_output=True)
    while True:
        status = subprocess.run([dvc, "queue", "status"], capture_output=True, text=True).stdout
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(2)
    elapsed = time.perf_counter() - started
    failed = status.count("Failed")
    if failed:
        print(f"  ({failed} experiment(s) failed; see `dvc queue status`)")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", default="12,24")
    parser.add_argument(
        "--dvc", type=int, default=12, help="points run as DVC experiments (0: none)"
    )
    parser.add_argument("--epochs", type=int, default=40)
    args = parser.parse_args()
    import keras  # noqa: F401  (imported once, before anything is timed)

    raw = yaml.safe_load(Path("params.yaml").read_text())
    work = Path("bench/out/search-work")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    print(f"{NAME}: learning rate, units, dropout; {args.epochs} epochs per trial, no pruning\n")
    print(
        "| trials | search (s) | bare loop (s) | search / loop | RSS after trial 1 (GiB) | "
        "peak RSS (GiB) | growth after trial 1 |"
    )
    print("|---|---|---|---|---|---|---|")
    first_points: list[dict] = []
    search_seconds: dict[int, float] = {}
    for trials in [int(n) for n in args.trials.split(",")]:
        params_path = work / f"params-{trials}.yaml"
        params_path.write_text(yaml.safe_dump(search_params(raw, trials, args.epochs)))
        result, searched, readings = run_search(params_path, work / f"search-{trials}")
        from pipelines.registry.tracking import nested_runs

        points = [
            {k: float(v) if k != "model.units" else int(v) for k, v in t.data.params.items()}
            for t in nested_runs.child_runs(result["parent_run_id"])
        ]
        looped = run_loop(params_path, points, args.epochs)
        growth = (max(readings[1:]) / readings[0] - 1) if len(readings) > 1 else 0.0
        print(
            f"| {trials} | {searched:.1f} | {looped:.1f} | {searched / looped:.2f} | "
            f"{readings[0]:.2f} | {max(readings):.2f} | {growth:+.1%} |",
            flush=True,
        )
        search_seconds[trials] = searched
        first_points = first_points or points
    if args.dvc:
        points = first_points[: args.dvc]
        elapsed = run_dvc(points, args.epochs)
        per_search = search_seconds[len(first_points)] * len(points) / len(first_points)
        print(
            f"\n{len(points)} points as `dvc exp run --queue` experiments (`dvc queue start -j 1`):"
            f" {elapsed:.0f} s, {elapsed / len(points):.1f} s per point; the search: "
            f"{per_search:.0f} s ({elapsed / per_search:.1f}x faster)"
        )
    print(f"\npeak RSS of this process: {rss_gib():.2f} GiB")


if __name__ == "__main__":
    from pipelines.console import show_messages

    show_messages()  # the library's progress lines, as the CLI shows them
    main()
