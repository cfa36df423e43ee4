"""No-op and incremental `dvc repro` times, in a project after a full run.

Usage: .venv/bin/python bench/repro_times.py [repeats]

1. no-op: `dvc repro` right after a full run; median of `repeats` (default 5).
2. incremental: change tabular-dnn's learning rate (a new value each time), `dvc repro`; the
   stages that ran and the median wall time of `repeats` (default 3 for this one).
params.yaml is restored and the pipeline re-run at the end.
"""

from __future__ import annotations

import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

from pipelines.environment import env_with_venv

BIN = Path(sys.executable).parent
ENV = env_with_venv()


def repro() -> tuple[float, set[str]]:
    start = time.perf_counter()
    out = subprocess.run(
        [str(BIN / "dvc"), "repro"], capture_output=True, text=True, env=ENV, check=True
    )
    return time.perf_counter() - start, set(re.findall(r"Running stage '([^']+)'", out.stdout))


def set_lr(value: float) -> None:
    from dvc.utils.serialize import modify_yaml

    with modify_yaml("params.yaml") as data:
        data["models"]["tabular-dnn"]["train"]["learning_rate"] = value


def main(repeats: int = 5) -> None:
    backup = Path("params.yaml").read_text()
    repro()  # make sure everything is up to date first
    noop = [repro()[0] for _ in range(repeats)]
    incremental, stages = [], set()
    try:
        for i in range(3):
            set_lr(0.001 + 0.0001 * (i + 1))
            seconds, ran = repro()
            incremental.append(seconds)
            stages |= ran
    finally:
        Path("params.yaml").write_text(backup)
        repro()
    print(
        f"no-op `dvc repro`: median {statistics.median(noop):.2f} s of {repeats} "
        f"(min {min(noop):.2f}, max {max(noop):.2f})"
    )
    print(
        f"incremental (tabular-dnn learning rate): median {statistics.median(incremental):.1f} s"
        f" of 3 ({', '.join(f'{s:.1f}' for s in incremental)}); stages run: {sorted(stages)}"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
