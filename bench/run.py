"""Run the whole benchmark suite and write one results file.

Usage, in a project after `make run` (it trains, registers versions and edits params.yaml,
restoring it; `make bench` does all of this in a scratch clone):
    .venv/bin/python bench/run.py [--only overhead,scale] [--out bench/out]

Each benchmark runs as its own script, one after the other (never two at once: they would
share the cores). Its output goes to `<out>/<name>.txt`; `<out>/results.md` collects them all
with the machine, the date, the commit and the command of each.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from pipelines.environment import env_with_venv

HERE = Path(__file__).resolve().parent

# name -> arguments. Repeats: each figure is a median over this many runs.
SUITE = {
    "repro_times": ["5"],  # no-op (5 runs) and incremental (3 runs) `dvc repro`
    "overhead": ["--repeats", "3"],  # full run vs plain script, breakdown, determinism
    "overhead_four": [  # the same on the four models from before text and the search
        *("--repeats", "3", "--no-profile", "--json", "bench/out/overhead_four.json"),
        *("--models", "tabular-dnn,images-cnn,sequence-lstm,sequence-transformer"),
    ],
    "inference": ["5"],
    "validation_speed": ["3"],
    "reliability": ["5"],  # concurrency and crash recovery, 5 tries each
    "scale": ["--repeats", "3"],
    "scale_pipeline": ["--sizes", "1,4,16"],  # dvc repro on sharded data, once per size
    "search": ["--trials", "12,24", "--dvc", "12"],  # search vs bare loop vs DVC experiments
    "experiment_overhead": ["--repeats", "3"],  # one dvc exp run vs a bare script
    "experiment_floor": ["--repeats", "3", "--plain"],  # the least around the training
    "text_windows": ["3"],  # the saved text-transformer: filled windows only vs every window
    "preload": ["3"],  # each stage's imports, and what a fork server would save of them
}
SCRIPT = {"overhead_four": "overhead"}  # entries that run another entry's script


def machine() -> str:
    cores = os.cpu_count()
    memory = ""
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        kib = int(meminfo.read_text().split()[1])
        memory = f", {kib / 2**20:.0f} GiB memory"
    versions = subprocess.run(
        [
            sys.executable,
            "-c",
            "from importlib.metadata import version as v; print(', '.join(f'{p} {v(p)}' for p in "
            "('tensorflow-cpu', 'keras', 'mlflow', 'great-expectations', 'prefect', 'dvc')))",
        ],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return (
        f"{platform.processor() or platform.machine()}, {cores} CPU cores{memory}; "
        f"Python {platform.python_version()}; {versions}"
    )


def _noise(line: str) -> bool:
    """Prefect's and TensorFlow's log lines: kept in `<name>.txt`, left out of the results."""
    return "| INFO" in line or "| WARNING" in line or line[:5] in ("I0000", "W0000", "E0000")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated benchmark names: " + ", ".join(SUITE))
    parser.add_argument("--out", type=Path, default=Path("bench/out"))
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(SUITE)
    unknown = [n for n in names if n not in SUITE]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {list(SUITE)}")
    if not Path("dvc.lock").exists() or not Path("mlflow.db").exists():
        sys.exit("run the pipeline first (`make run`): the suite starts from a full run")
    args.out.mkdir(parents=True, exist_ok=True)
    env = env_with_venv()
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    sections = [
        "# Benchmark results",
        "",
        f"Machine: {machine()}.",
        f"Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC. Commit: {commit or 'unknown'}.",
        "",
    ]
    failed = []
    for name in names:
        script = SCRIPT.get(name, name)
        command = [sys.executable, str(HERE / f"{script}.py"), *SUITE[name]]
        shown = f"python bench/{script}.py {' '.join(SUITE[name])}"
        print(f"== {shown}", flush=True)
        start = time.perf_counter()
        with open(args.out / f"{name}.txt", "w") as log:
            proc = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
            )
            lines = []
            for line in proc.stdout:
                log.write(line)
                lines.append(line)
                if not _noise(line):
                    print(f"   {line}", end="", flush=True)
            code = proc.wait()
        minutes = (time.perf_counter() - start) / 60
        if code:
            failed.append(name)
        result = [line.rstrip() for line in lines if not _noise(line)]
        sections += [
            f"## {name}",
            "",
            f"`{shown}`: {minutes:.1f} min, exit {code}.",
            "",
            *result[-60:],
            "",
        ]
        (args.out / "results.md").write_text("\n".join(sections) + "\n")
    print(f"results: {args.out / 'results.md'}")
    if failed:
        sys.exit(f"failed: {', '.join(failed)} (see {args.out}/<name>.txt)")


if __name__ == "__main__":
    main()
