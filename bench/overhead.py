"""Pipeline overhead: a full `dvc repro --force` against the plain script, where the extra time
goes, and whether two full runs with the same seed give the same metrics.

Usage, in a project after `make run` (the local Prefect server up, as `make run` leaves it):
    .venv/bin/python bench/overhead.py [--repeats 3] [--json bench/out/overhead.json]
        [--models tabular-dnn,images-cnn,sequence-lstm,sequence-transformer]

`--models` compares a subset: the plain script trains only those models (`--only`), and DVC
runs `dvc repro --force register@<model> ...`, which forces those models' stages and every
stage upstream of them (their datasets' ingest, validate and split), and nothing else.

Each repeat runs `bench/plain_script.py`, then `dvc repro --force`, back to back. A `python`
shim put first on PATH times every stage command DVC starts, so DVC's own share is the run's
wall time minus the stages' time. A last, extra `dvc repro --force` runs every stage under
pyinstrument (sampling profiler, `pip install pyinstrument`); its samples are grouped by the
library the pipeline's code was calling when the sample was taken (imports are counted
separately, whoever triggered them). Without pyinstrument the breakdown is skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from quiet import settle  # bench/ is on sys.path when run as a script

from pipelines.environment import env_with_venv

BIN = Path(sys.executable).parent
HERE = Path(__file__).resolve().parent

# The shim: records each stage command's wall time and peak RSS (the largest process of its
# tree), optionally profiles it.
SHIM = """#!{python}
import json, os, resource, subprocess, sys, time
argv = sys.argv[1:]
profile = os.environ.get("BENCH_PROFILE_DIR")
stage = " ".join(argv[2:4]) if argv[:2] == ["-m", "pipelines.cli"] else " ".join(argv[:3])
if profile and argv[:2] == ["-m", "pipelines.cli"]:
    out = os.path.join(profile, stage.replace(" ", "@") + ".pyisession")
    argv = ["-m", "pyinstrument", "-r", "pyisession", "-o", out, *argv]
start = time.time()
code = subprocess.call([{python!r}, *argv])
seconds = time.time() - start
peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
record = {{"stage": stage, "start": start, "seconds": seconds, "peak_rss_mib": peak_mib}}
with open(os.environ["BENCH_STAGE_LOG"], "a") as log:
    log.write(json.dumps(record) + "\\n")
sys.exit(code)
"""

# Library -> component of the breakdown. Anything else is named after its library.
GROUPS = {
    **dict.fromkeys(("keras", "tensorflow", "tf_keras"), "Keras/TensorFlow"),
    **dict.fromkeys(("mlflow", "sqlalchemy", "alembic", "mlflow_skinny"), "MLflow"),
    "great_expectations": "Great Expectations",
    **dict.fromkeys(("prefect", "httpx", "anyio", "fastapi", "starlette"), "Prefect"),
    **dict.fromkeys(
        ("pandas", "pyarrow", "numpy", "scipy", "sklearn", "matplotlib"), "data libraries"
    ),
    "subprocess": "child processes (fresh-process parity check, git)",
    "typer": "CLI (typer)",
}
WAIT = "waiting (sleep: the Prefect server's start)"
IMPORTS = "import"


def _library(file_path: str) -> str | None:
    """Top-level package of a frame's file, None for the pipeline's own code."""
    path = file_path.replace("\\", "/")
    if "/pipelines/" in path and "site-packages" not in path:
        return None
    match = re.search(r"site-packages/([A-Za-z0-9_]+)", path)
    if match:
        return match.group(1)
    return Path(path).stem.lstrip("_") or path


def categorize(frame, seconds: dict[str, float], below: str | None = None) -> None:
    """Add the time of each leaf frame to the component of the library that the pipeline's
    code called into (the outermost library frame under the innermost pipeline frame)."""
    path = frame.file_path or ""
    own_import = f"{IMPORTS}: pipelines"
    if below in (IMPORTS, own_import) and path and path[0] != "<" and "importlib" not in path:
        # Name the first library being imported (the pipeline's modules import others).
        library = _library(path)
        below = f"{IMPORTS}: {GROUPS.get(library, library)}" if library else own_import
    elif below is None or not below.startswith(IMPORTS):
        if "importlib._bootstrap" in path:
            below = IMPORTS
        elif path.startswith("<") or not path:  # built-ins and self-time leaves
            if below is None and frame.function == "sleep":
                below = WAIT
        else:
            library = _library(path)
            if library is None:
                below = None  # back in the pipeline's code: the next library call decides
            elif below is None:
                below = GROUPS.get(library, library)
    if not frame.children:
        seconds[below or "the pipeline's own code"] += frame.time
    for child in frame.children:
        categorize(child, seconds, below)


def breakdown(profiles: Path) -> dict[str, dict[str, float]]:
    """Seconds per component, per stage kind (ingest, validate, ...), from pyinstrument
    sessions."""
    from pyinstrument.session import Session

    table: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for path in sorted(profiles.glob("*.pyisession")):
        kind = path.name.split("@")[0]
        seconds: dict[str, float] = defaultdict(float)
        root = Session.load(path).root_frame(trim_stem=False)
        if root is not None:
            categorize(root, seconds)
        for component, value in seconds.items():
            table[component][kind] += value
    return {k: dict(v) for k, v in table.items()}


def install_shim(folder: Path) -> Path:
    """Write the shim as `folder/python`; returns `folder`, to put first on PATH."""
    folder.mkdir(parents=True, exist_ok=True)
    shim = folder / "python"
    shim.write_text(SHIM.format(python=str(BIN / "python")))
    shim.chmod(0o755)
    return folder


def shim_env(stage_log: Path, profile_dir: Path | None, shim_dir: Path) -> dict[str, str]:
    env = env_with_venv()
    env["PATH"] = f"{shim_dir}{os.pathsep}{env['PATH']}"  # the shim's `python` comes first
    env["BENCH_STAGE_LOG"] = str(stage_log)
    env.pop("BENCH_PROFILE_DIR", None)
    if profile_dir is not None:
        env["BENCH_PROFILE_DIR"] = str(profile_dir)
    return env


def full_repro(
    shim_dir: Path, profile_dir: Path | None = None, models: list[str] | None = None
) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as log:
        stage_log = Path(log.name)
    targets = [f"register@{name}" for name in models or []]
    start = time.perf_counter()
    proc = subprocess.run(
        [str(BIN / "dvc"), "repro", "--force", *targets],
        env=shim_env(stage_log, profile_dir, shim_dir),
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - start
    if proc.returncode:
        sys.exit(f"dvc repro --force failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    stages = [json.loads(line) for line in stage_log.read_text().splitlines()]
    stage_log.unlink()
    metrics = {
        path.parent.name: json.loads(path.read_text())["test"]
        for path in sorted(Path("reports").glob("*/metrics.json"))
        if not models or path.parent.name in models
    }
    return {"wall_s": wall, "stages": stages, "metrics": metrics}


def plain_script(models: list[str] | None = None) -> dict:
    start = time.perf_counter()
    only = ["--only", ",".join(models)] if models else []
    out = subprocess.run(
        [sys.executable, str(HERE / "plain_script.py"), *only],
        capture_output=True,
        text=True,
        check=True,
    )
    return {"wall_s": time.perf_counter() - start, "output": out.stdout.strip().splitlines()}


def metric_spread(runs: list[dict]) -> dict[str, float]:
    """Largest absolute difference of any test metric between runs, per model."""
    spread = {}
    for task in runs[0]["metrics"]:
        spread[task] = max(
            abs(run["metrics"][task][name] - runs[0]["metrics"][task][name])
            for run in runs[1:]
            for name in runs[0]["metrics"][task]
        )
    return spread


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=Path("bench/out/overhead.json"))
    parser.add_argument("--no-profile", action="store_true", help="skip the profiled run")
    parser.add_argument(
        "--models", default="", help="comma-separated model names (default: every model)"
    )
    args = parser.parse_args()
    models = [name for name in args.models.split(",") if name]
    if models:
        print(f"models: {', '.join(models)} (their stages and those upstream of them)")

    shim_dir = install_shim(Path(tempfile.mkdtemp(prefix="bench-shim-")))
    runs, plains = [], []
    for i in range(args.repeats):
        settle()
        plains.append(plain_script(models))
        settle()
        runs.append(full_repro(shim_dir, models=models))
        ratio = runs[-1]["wall_s"] / plains[-1]["wall_s"]
        print(
            f"repeat {i + 1}: plain {plains[-1]['wall_s']:.1f} s, dvc repro --force "
            f"{runs[-1]['wall_s']:.1f} s ({len(runs[-1]['stages'])} stages), ratio {ratio:.2f}",
            flush=True,
        )
    result: dict = {"models": models or "all"}
    if runs:
        result.update(summarize(runs, plains))
    if not args.no_profile:
        try:
            import pyinstrument  # noqa: F401
        except ImportError:
            print("pyinstrument is not installed: no breakdown (pip install pyinstrument)")
        else:
            profiles = Path(tempfile.mkdtemp(prefix="bench-profiles-"))
            profiled = full_repro(shim_dir, profiles, models)
            result["profiled_repro_s"] = profiled["wall_s"]
            result["breakdown"] = breakdown(profiles)
            shutil.rmtree(profiles)
    shutil.rmtree(shim_dir)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    print(report(result))


def summarize(runs: list[dict], plains: list[dict]) -> dict:
    result = {
        "plain_s": [p["wall_s"] for p in plains],
        "repro_s": [r["wall_s"] for r in runs],
        "ratios": [r["wall_s"] / p["wall_s"] for r, p in zip(runs, plains, strict=True)],
        "stage_s": [sum(s["seconds"] for s in r["stages"]) for r in runs],
        "stages_run": len(runs[0]["stages"]),
        "metrics": [r["metrics"] for r in runs],
        "metric_spread": metric_spread(runs) if len(runs) > 1 else {},
        "plain_output": plains[-1]["output"],
    }
    per_kind: dict[str, list[float]] = defaultdict(list)
    for run in runs:
        kinds: dict[str, float] = defaultdict(float)
        for stage in run["stages"]:
            kinds[stage["stage"].split()[0]] += stage["seconds"]
        for kind, value in kinds.items():
            per_kind[kind].append(value)
    result["stage_kind_s"] = {k: statistics.median(v) for k, v in per_kind.items()}
    return result


def report(result: dict) -> str:
    lines: list[str] = []
    if "repro_s" in result:
        lines += timing_report(result)
    if "breakdown" in result:
        lines += breakdown_report(result)
    return "\n".join(lines)


def timing_report(result: dict) -> list[str]:
    med = statistics.median
    repro, plain, stages = med(result["repro_s"]), med(result["plain_s"]), med(result["stage_s"])
    n = len(result["repro_s"])
    lines = [
        f"plain script: median {plain:.1f} s of {n}; `dvc repro --force`: median {repro:.1f} s "
        f"of {n}; ratio median {med(result['ratios']):.2f} "
        f"({', '.join(f'{r:.2f}' for r in result['ratios'])})",
        "",
        "| stage kind | median seconds (all datasets or models) |",
        "| --- | --- |",
        *(f"| {k} | {v:.1f} |" for k, v in result["stage_kind_s"].items()),
        f"| DVC itself (run minus stages: hashing, lock, cache) | {repro - stages:.1f} |",
    ]
    if result.get("metric_spread"):
        lines += [
            "",
            "Determinism, largest |difference| of any test metric between the full runs:",
            *(f"- {task}: {value:.3g}" for task, value in result["metric_spread"].items()),
        ]
    return lines


def breakdown_report(result: dict) -> list[str]:
    kinds = sorted({k for v in result["breakdown"].values() for k in v})
    lines = [
        "",
        f"Profiled run ({result['profiled_repro_s']:.1f} s under pyinstrument), seconds:",
        "",
        f"| component | {' | '.join(kinds)} | all |",
        "| --- | " + "--- | " * (len(kinds) + 1),
    ]
    rows = sorted(result["breakdown"].items(), key=lambda kv: -sum(kv[1].values()))
    total = sum(sum(v.values()) for _, v in rows)
    small = [(c, v) for c, v in rows if sum(v.values()) < 0.01 * total]
    rest: dict[str, float] = defaultdict(float)
    for _, values in small:
        for kind, value in values.items():
            rest[kind] += value
    rows = [row for row in rows if row not in small]
    rows.append((f"everything else ({len(small)} libraries, each < 1%)", dict(rest)))
    rows.append(("total", {k: sum(v.get(k, 0) for _, v in rows) for k in kinds}))
    for component, values in rows:
        cells = " | ".join(f"{values.get(k, 0):.1f}" for k in kinds)
        lines.append(f"| {component} | {cells} | {sum(values.values()):.1f} |")
    return lines


if __name__ == "__main__":
    main()
