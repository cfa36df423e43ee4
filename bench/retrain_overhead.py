"""What the retraining flow costs on top of `dvc repro`, measured in a project after a full run.

Usage (from a project where `dvc repro` has run, Prefect server up or startable):
    .venv/bin/python bench/retrain_overhead.py

Measures, one run each (the pairs run back to back on the same machine):
  1. no-op: `dvc repro` against `pipelines retrain` when everything is up to date;
  2. one model: change tabular-dnn's learning rate, `dvc repro`; change it again,
     `pipelines retrain --model tabular-dnn --no-push`.
The params file is restored at the end (and the stages re-run so DVC is consistent).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from pipelines.environment import env_with_venv

BIN = Path(sys.executable).parent


ENV = env_with_venv()


def _timed(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(args, check=True, capture_output=True, text=True, env=ENV)
    return time.perf_counter() - start


def _set_lr(value: float) -> None:
    from dvc.utils.serialize import modify_yaml

    with modify_yaml("params.yaml") as data:
        data["models"]["tabular-dnn"]["train"]["learning_rate"] = value


def main() -> None:
    dvc, pipelines = str(BIN / "dvc"), str(BIN / "pipelines")
    backup = Path("params.yaml").read_text()
    subprocess.run([pipelines, "prefect-server", "start"], check=True, capture_output=True)
    rows = [
        ("no-op", "dvc repro", _timed([dvc, "repro"])),
        ("no-op", "pipelines retrain", _timed([pipelines, "retrain", "--no-push"])),
    ]
    try:
        _set_lr(0.0011)
        rows.append(("tabular-dnn lr changed", "dvc repro", _timed([dvc, "repro"])))
        _set_lr(0.0012)
        rows.append(
            (
                "tabular-dnn lr changed",
                "pipelines retrain --model tabular-dnn",
                _timed([pipelines, "retrain", "--model", "tabular-dnn", "--no-push"]),
            )
        )
    finally:
        Path("params.yaml").write_text(backup)
        subprocess.run([dvc, "repro"], check=True, capture_output=True, env=ENV)
    print("| case | command | wall time |\n| --- | --- | --- |")
    for case, command, seconds in rows:
        print(f"| {case} | `{command}` | {seconds:.1f} s |")


if __name__ == "__main__":
    main()
