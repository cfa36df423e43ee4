"""What Prefect costs a DVC stage: one stage process (ingest of the breast-cancer table) run
three ways, median of N runs each.

  off        PIPELINES_PREFECT=off: the plain step function, no Prefect.
  local      the stage's flow against the local server that the stages start once and reuse.
  ephemeral  the same flow with no API URL: Prefect starts a temporary server in the process.

Run from the repo root with the project's environment:  python bench/prefect_overhead.py [N]
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EPHEMERAL = (
    "from pipelines.orchestration import flows; "
    "flows.run_stage_flow('ingest', dataset='breast_cancer', out=sys.argv[1], params='params.yaml')"
)


def _time(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def main(runs: int = 3) -> None:
    base = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL",)}
    base["TF_CPP_MIN_LOG_LEVEL"] = "2"
    out = str(Path(tempfile.mkdtemp()) / "bc.parquet")
    stage = [sys.executable, "-m", "pipelines.cli", "ingest", "breast_cancer", "--out", out]
    # Start (or find) the local server once, as the first DVC stage does.
    subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "prefect-server", "start"],
        env=base,
        check=True,
        capture_output=True,
    )
    modes = {
        "off": (stage, {**base, "PIPELINES_PREFECT": "off"}),
        "local": (stage, {**base, "PIPELINES_PREFECT": "auto"}),
        "ephemeral": (
            [sys.executable, "-c", f"import sys; {EPHEMERAL}", out],
            {**base, "PREFECT_SERVER_ALLOW_EPHEMERAL_MODE": "true"},
        ),
    }
    medians = {}
    for mode, (command, env) in modes.items():
        times = [_time(command, env) for _ in range(runs)]
        medians[mode] = statistics.median(times)
        print(f"{mode:10s} median {medians[mode]:6.2f} s  runs {[round(t, 2) for t in times]}")
    print(
        f"Prefect cost per stage: local server +{medians['local'] - medians['off']:.2f} s, "
        f"ephemeral +{medians['ephemeral'] - medians['off']:.2f} s"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
