"""The least one `dvc exp run` of a model can cost beyond a bare script while it keeps what the
product stands for, measured side by side with that script in one run.

A bare script (the one `experiment_overhead.py` times) imports TensorFlow once, trains and
evaluates. The experiment keeps, by design:
- DVC: `dvc exp run` finds what changed, runs it and records the experiment (`dvc exp run` with
  nothing to run, in the workspace right after `dvc repro`);
- three DVC stages (train, evaluate, register), each its own process that shows in the Prefect
  UI (a process that imports the CLI and runs an empty Prefect flow against the project's
  server; timed three times);
- evaluate computes its metrics from the test outputs train wrote, so it imports no
  TensorFlow (it used to load the model, and import TensorFlow a second time);
- the parity check in a clean interpreter, as `mlflow models serve` would load the model
  (`import keras, mlflow.pyfunc`);
- the MLflow record: the live run in train, the evaluation added in evaluate, the registration
  (a process that opens the project's MLflow store, timed three times, less MLflow's import).

The floor is the sum of these, with no work in any of them. `1.5x` leaves half the bare
script's time for all of it.

The same parts give the floor of a full `dvc repro --force` (each of `dvc.lock`'s stages a
process with its Prefect flow; TensorFlow in every train and tune and in each register's
clean interpreter, where the plain script imports it once; Great Expectations in
each validate; DVC's no-op `dvc repro`); with `--plain`, against one run of
`bench/plain_script.py` in this run, side by side (without, in seconds only: a plain-script
time from another run, or another commit, would make a ratio of two machines' states).

Both floors hold for any design that gives each stage a fresh interpreter; a preloaded parent
that forks the stages (`preload.py`) is the one way under the per-process parts, and a spare
scorer it starts ahead takes the parity interpreter's imports off the experiment's path. Usage, in a
project after `make run`, its Prefect server up:
    .venv/bin/python bench/experiment_floor.py [--model tabular-dnn] [--repeats 3] [--plain]
Writes bench/out/experiment_floor.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from pipelines.environment import executable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from experiment_overhead import _BARE, _timed  # noqa: E402  (a bench script beside this one)

_EMPTY_FLOW = (
    "import pipelines.cli\n"
    "from pipelines.orchestration.prefect_server import ensure_api\n"
    "ensure_api()\n"
    "from prefect import flow\n"
    "from pipelines.orchestration.flows import stage_settings\n"
    "with stage_settings():  # as a stage's flow runs\n"
    "    flow(name='floor', log_prints=True)(lambda: None)()\n"
)
_OPEN_STORE = (
    "import time, mlflow\n"
    "from pipelines.registry.tracking.connection import tracking_uri\n"
    "start = time.perf_counter()\n"
    "mlflow.MlflowClient(tracking_uri()).search_experiments(max_results=1)\n"
    "print(f'STORE {time.perf_counter() - start:.3f}')\n"
)


DVC = "dvc exp run, nothing to run"
STAGES = "3 stage processes, an empty Prefect flow each"
PARITY = "parity: a clean interpreter imports Keras and MLflow"
STORE = "3 processes open the MLflow store"


def _python(code: str, *args: str) -> tuple[float, str]:
    return _timed([sys.executable, "-c", code, *args])


def _store_open() -> float:
    """Seconds to open the project's MLflow store in a fresh process, MLflow's import left out
    (counted in the parity check's import)."""
    _, out = _python(_OPEN_STORE)
    return float(next(line for line in out.splitlines() if line.startswith("STORE")).split()[1])


def _idle_experiment() -> float:
    """Seconds of a `dvc exp run` that runs no stage (the project is brought up to date first,
    untimed); fails if DVC ran one anyway."""
    _timed([executable("dvc"), "repro"])
    seconds, out = _timed([executable("dvc"), "exp", "run"])
    if "Running stage" in out:
        raise SystemExit(f"`dvc exp run` ran stages after `dvc repro`:\n{out[-2000:]}")
    return seconds


def _parts() -> dict[str, float]:
    return {
        DVC: _idle_experiment(),
        STAGES: sum(_python(_EMPTY_FLOW)[0] for _ in range(3)),
        PARITY: _python("import keras, mlflow.pyfunc")[0],
        STORE: sum(_store_open() for _ in range(3)),
    }


def _pipeline_floor(parts: dict[str, float]) -> dict[str, float]:
    """The least a full `dvc repro --force` costs beyond the plain script, from one repeat's
    parts and the stage kinds in `dvc.lock`."""
    import yaml

    kinds = Counter(
        name.split("@")[0] for name in yaml.safe_load(Path("dvc.lock").read_text())["stages"]
    )
    process = parts[STAGES] / 3
    keras = _python("import keras")[0]
    tensorflow = sum(kinds[k] for k in ("train", "tune")) - 1  # the script's one
    return {
        f"{sum(kinds.values())} stage processes, an empty Prefect flow each": process
        * sum(kinds.values()),
        f"TensorFlow imported {tensorflow} more times": keras * tensorflow,
        f"{kinds['register']} parity interpreters": parts[PARITY] * kinds["register"],
        f"{kinds['validate']} Great Expectations imports": kinds["validate"]
        * _python("import great_expectations")[0],
        "dvc repro, nothing to run": _timed([executable("dvc"), "repro"])[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="tabular-dnn")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--plain", action="store_true", help="run the plain script here too")
    args = parser.parse_args()
    key = f"models.{args.model}.train.learning_rate"
    value = str(_learning_rate(args.model))
    runs: list[dict[str, Any]] = []
    for i in range(args.repeats):
        parts = _parts()
        bare, _ = _python(_BARE, args.model, key, value)
        floor = sum(parts.values())
        runs.append({"parts": parts, "floor_s": floor, "bare_s": bare})
        shown = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in parts.items())
        print(f"repeat {i + 1}: bare script {bare:.1f} s; floor {floor:.1f} s ({shown})")
    bare = statistics.median(r["bare_s"] for r in runs)
    floor = statistics.median(r["floor_s"] for r in runs)
    parts = {name: statistics.median(r["parts"][name] for r in runs) for name in runs[0]["parts"]}
    result = {
        "model": args.model,
        "runs": runs,
        "median_parts_s": parts,
        "median_floor_s": floor,
        "median_bare_s": bare,
        "budget_at_1.5x_s": bare / 2,
        "least_ratio": (bare + floor) / bare,
    }
    # A preloaded parent forks the stages (the stage server): no stage process or store opening
    # is paid, but DVC and the clean interpreter still are.
    forked = parts[DVC] + parts[PARITY]
    result["floor_with_preloaded_parent_s"] = forked
    # ...and when it keeps a spare scorer ready (the stage server does), the clean interpreter's
    # imports are paid ahead, off the experiment's path: DVC is left.
    result["floor_with_spare_scorer_s"] = parts[DVC]
    pipeline = _pipeline_floor(parts)
    result["pipeline_floor_parts_s"] = pipeline
    result["pipeline_floor_s"] = sum(pipeline.values())
    out_dir = HERE / "out"
    out_dir.mkdir(exist_ok=True)
    plain = _timed([sys.executable, str(HERE / "plain_script.py")])[0] if args.plain else None
    result["plain_script_s"] = plain
    (out_dir / "experiment_floor.json").write_text(json.dumps(result, indent=2) + "\n")
    for name, seconds in parts.items():
        print(f"  {name:55s} {seconds:5.2f} s")
    print(
        f"median: bare script {bare:.1f} s, so 1.5x leaves {bare / 2:.1f} s; the floor is "
        f"{floor:.1f} s: no experiment can be under {(bare + floor) / bare:.2f}x"
    )
    print(
        f"with a preloaded parent that forks the stages: {forked:.1f} s, under "
        f"{(bare + forked) / bare:.2f}x"
    )
    print(
        f"...and with a spare scorer ready for the parity check: {parts[DVC]:.1f} s, under "
        f"{(bare + parts[DVC]) / bare:.2f}x"
    )
    print("the whole pipeline, beyond the plain script:")
    for name, seconds in pipeline.items():
        print(f"  {name:55s} {seconds:6.1f} s")
    total = result["pipeline_floor_s"]
    if plain:
        print(
            f"floor {total:.0f} s against the plain script's {plain:.0f} s in this run: "
            f"no full run can be under {(plain + total) / plain:.2f}x"
        )
    else:
        print(f"floor {total:.0f} s (--plain for the ratio to the plain script)")


def _learning_rate(model: str) -> float:
    from pipelines.config import load_config

    return float(load_config("params.yaml").model(model).train.learning_rate)


if __name__ == "__main__":
    main()
