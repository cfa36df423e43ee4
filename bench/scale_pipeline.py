"""The whole pipeline past memory: `dvc repro` on a sharded dataset of 1M, 4M and 16M rows.

Usage: .venv/bin/python bench/scale_pipeline.py [--dir /tmp/pipelines-scale] [--sizes 1,4,16]

For each size, a fresh clone of this repository gets a params.yaml with one sharded tabular
dataset (`shards: {rows: 1000000}`), the first N shards that `bench/scale.py` synthesizes
(breast-cancer rows resampled with 1% noise, 1M rows each) as its source, and the tabular DNN
of the shipped params with batch 4,096 and 3 epochs. `propose-suite` drafts its suite, then
`dvc repro` runs ingest, validate, split, train, evaluate and register (PIPELINES_PREFECT=off),
each stage in its own interpreter (PIPELINES_STAGE_SERVER=off): a stage forked from the stage
server does its work outside the stage command's process tree, so the shim would see only the
command's own few MiB.

The `python` shim of `bench/overhead.py`, first on PATH, records each stage's wall time and
peak RSS (the largest process of the stage's tree, from `getrusage(RUSAGE_CHILDREN)`).
Printed: one table per size, then the peak RSS growth of every stage from the smallest size to
the largest. Each size runs once: a 16M-row run takes minutes and needs about 20 GB of disk
(the data, its splits and DVC's cache copies).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import yaml
from overhead import install_shim, shim_env  # bench/ is on sys.path when run as a script
from scale import synthesize

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DATASET, TASK = "big_cancer", "tabular-big"


def params_for(project: Path) -> dict:
    raw = yaml.safe_load((project / "params.yaml").read_text())
    raw["datasets"] = {
        DATASET: {
            "modality": "tabular",
            "source": f"data/external/{DATASET}",
            "label": "target",
            "split": {"validation": 0.15, "test": 0.2},
            "shards": {"rows": 1_000_000},
        }
    }
    task = raw["models"]["tabular-dnn"]
    task["dataset"] = DATASET
    task["train"].update(batch_size=4096, max_epochs=3, patience=1)
    raw["models"] = {TASK: task}
    raw["search"] = {}
    return raw


def run_size(size: int, shards: list[Path], workdir: Path, shim_dir: Path) -> dict:
    project = workdir / f"project-{size}M"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(project)], check=True)
    source = project / "data" / "external" / DATASET
    source.mkdir(parents=True)
    for shard in shards[:size]:
        (source / shard.name).symlink_to(shard)
    (project / "params.yaml").write_text(yaml.safe_dump(params_for(project), sort_keys=False))
    log = workdir / f"stages-{size}M.jsonl"
    env = shim_env(log, None, shim_dir)
    env.update(PIPELINES_PREFECT="off", PIPELINES_STAGE_SERVER="off", TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("MLFLOW_TRACKING_URI", None)
    suite = f"gx/expectations/{DATASET}.json"
    subprocess.run(  # creates the model's search folder, which its train stage depends on
        ["python", "-m", "pipelines.cli", "check-params"], cwd=project, env=env, check=True
    )
    start = time.perf_counter()
    subprocess.run(
        ["python", "-m", "pipelines.cli", "propose-suite", DATASET, "--out", suite],
        cwd=project,
        env=env,
        check=True,
    )
    propose_s = time.perf_counter() - start
    start = time.perf_counter()
    proc = subprocess.run(
        ["dvc", "repro"], cwd=project, env=env, capture_output=True, text=True, check=False
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        print(proc.stdout[-3000:], proc.stderr[-3000:])
        raise SystemExit(f"dvc repro failed at {size}M rows")
    stages = [json.loads(line) for line in log.read_text().splitlines()]
    metrics = json.loads((project / "reports" / TASK / "metrics.json").read_text())
    registered = "is @champion" in proc.stdout
    shutil.rmtree(project)
    return {
        "rows": size * 1_000_000,
        "propose_suite_s": propose_s,
        "repro_s": wall,
        "stages": [s for s in stages if s["stage"].split()[0] != "propose-suite"],
        "test_accuracy": metrics["test"]["accuracy"],
        "champion": registered,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", type=Path, default=Path("/tmp/pipelines-scale"))
    parser.add_argument("--sizes", default="1,4,16", help="Millions of rows.")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    shards = synthesize(args.dir, max(sizes))
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-scale-pipeline-") as tmp:
        shim_dir = install_shim(Path(tmp) / "shim")
        for size in sizes:
            result = run_size(size, shards, Path(tmp), shim_dir)
            results.append(result)
            print(json.dumps(result), flush=True)
    for result in results:
        print(
            f"\n{result['rows']:,} rows: `dvc repro` {result['repro_s']:.0f} s "
            f"(propose-suite {result['propose_suite_s']:.0f} s), test accuracy "
            f"{result['test_accuracy']:.4f}, champion: {'yes' if result['champion'] else 'no'}\n"
        )
        print("| stage | seconds | rows/s | peak RSS (MiB) |\n| --- | --- | --- | --- |")
        for stage in result["stages"]:
            print(
                f"| {stage['stage']} | {stage['seconds']:.1f} | "
                f"{result['rows'] / stage['seconds']:,.0f} | {stage['peak_rss_mib']:,.0f} |"
            )
    first, last = results[0], results[-1]
    print(f"\npeak RSS growth per stage, {first['rows']:,} -> {last['rows']:,} rows:")
    for a, b in zip(first["stages"], last["stages"], strict=True):
        growth = b["peak_rss_mib"] / a["peak_rss_mib"] - 1
        print(
            f"- {a['stage'].split()[0]}: {a['peak_rss_mib']:,.0f} -> {b['peak_rss_mib']:,.0f} MiB "
            f"({growth:+.0%})"
        )


if __name__ == "__main__":
    main()
