"""One `dvc exp run` of a model against a bare script that trains and evaluates the same model
with the same params, seed, split files and early stopping (so the same epochs), side by side
in one run: the cost a user feels around the training in the daily loop.

Usage, in a project after `make run` (a temp experiment: the workspace is left as it is, and
the experiment's version is registered as a candidate):
    .venv/bin/python bench/experiment_overhead.py [--model tabular-dnn] [--set
        models.tabular-dnn.train.learning_rate=0.003] [--repeats 3] [--workspace]

`--workspace` runs `dvc exp run` in the workspace instead (DVC's default). Either way only the
model's own stages run: a `--temp` copy gets the other models' `registration.json` from the
project before DVC reaches their register stages (docs/limits.md). After each `--workspace`
repeat the workspace is put back as it was before it (`params.yaml`, `dvc.lock`, the metrics
files and each `registration.json` rewritten, the rest with `dvc checkout`), so every repeat
starts from the same project, committed or not.

Each repeat sets a value of its own, 1% above the last (0.003, 0.00303, 0.00306), so that
DVC's run cache never stands in for a run within one invocation; a second invocation in the same
project needs another `--set` value, and stops with that message if the experiment trained
nothing. Writes bench/out/experiment_overhead.json and prints
the ratio of the medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from quiet import settle  # bench/ is on sys.path when run as a script

from pipelines.environment import env_with_venv, executable

HERE = Path(__file__).resolve().parent

# The bare script: imports, the split files, the model (with its preprocessing inside), a fit
# with early stopping, test metrics. No validation, tracking, orchestration or registry.
_BARE = """
import sys, time
start = time.perf_counter()
import keras
from pipelines.config import load_config
from pipelines.model.evaluation import evaluate_model
from pipelines.model.training import TrainingData, fit_model
from pathlib import Path
name, key, value = sys.argv[1], sys.argv[2], sys.argv[3]
cfg = load_config("params.yaml")
section, _, param = key.split(".", 2)[2].partition(".")
cfg = cfg.with_overrides(name, {f"{section}.{param}": type(getattr(getattr(cfg.entry(name),
    section), param))(value)})
data_dir = Path(cfg.paths.processed) / cfg.entry(name).dataset
model, curves = fit_model(cfg, cfg.model(name), TrainingData.load(data_dir), verbose=0)
out = Path("/tmp/bare-experiment") / name
out.mkdir(parents=True, exist_ok=True)
model.save(out / "model.keras")
metrics = evaluate_model(name, out / "model.keras", data_dir, out)
print(f"EPOCHS {len(curves)} SECONDS {time.perf_counter() - start:.1f} TEST {metrics['test']}")
"""


def _timed(command: list[str]) -> tuple[float, str]:
    started = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, env=env_with_venv())
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
        )
    return time.perf_counter() - started, proc.stdout + proc.stderr


def _workspace_files() -> list[Path]:
    """params.yaml, dvc.lock, each metrics file and each `registration.json`: what `dvc
    checkout` does not put back."""
    return [
        Path("params.yaml"),
        Path("dvc.lock"),
        *sorted(Path("reports").glob("*/metrics.json")),
        *sorted(Path("models").glob("*/registration.json")),
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="tabular-dnn")
    parser.add_argument("--set", default="models.tabular-dnn.train.learning_rate=0.003")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--workspace", action="store_true", help="not in a --temp copy")
    args = parser.parse_args()
    key, _, value = args.set.partition("=")
    runs = []
    for i in range(args.repeats):
        # Each repeat a value of its own: the same params twice would let DVC's run cache
        # restore train and evaluate instead of running them.
        repeat_value = f"{float(value) * (1 + 0.01 * i):.6g}"
        where = [] if args.workspace else ["--temp"]
        # The files a workspace experiment rewrites outside DVC's cache, as they are now.
        kept = {f: f.read_bytes() for f in _workspace_files()} if args.workspace else {}
        settle()
        experiment, said = _timed(
            [executable("dvc"), "exp", "run", *where, "-S", f"{key}={repeat_value}"]
        )
        if kept:
            for path, content in kept.items():
                path.write_bytes(content)
            _timed([executable("dvc"), "checkout", "--force"])
        if f"Running stage 'train@{args.model}'" not in said:
            # A value this project has trained before: DVC restored the stages, nothing ran.
            raise SystemExit(
                f"dvc exp run did not train {args.model} with {key}={repeat_value} (DVC's run "
                f"cache had it): pass another --set value.\n{said[-1500:]}"
            )
        settle()
        bare, out = _timed([sys.executable, "-c", _BARE, args.model, key, repeat_value])
        epochs = next(line for line in out.splitlines() if line.startswith("EPOCHS")).split()[1]
        runs.append(
            {
                "value": repeat_value,
                "experiment_s": experiment,
                "bare_s": bare,
                "epochs": int(epochs),
            }
        )
        print(
            f"repeat {i + 1}: dvc exp run {experiment:.1f} s, bare script {bare:.1f} s "
            f"({epochs} epochs), ratio {experiment / bare:.2f}",
            flush=True,
        )
    experiment = statistics.median(r["experiment_s"] for r in runs)
    bare = statistics.median(r["bare_s"] for r in runs)
    result = {
        "model": args.model,
        "set": args.set,
        "where": "workspace" if args.workspace else "temp copy",
        "runs": runs,
        "median_experiment_s": experiment,
        "median_bare_s": bare,
        "ratio": experiment / bare,
    }
    out_dir = HERE / "out"
    out_dir.mkdir(exist_ok=True)
    (out_dir / "experiment_overhead.json").write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"median: dvc exp run {experiment:.1f} s, bare {bare:.1f} s, ratio {experiment / bare:.2f}"
    )


if __name__ == "__main__":
    from pipelines.console import show_messages

    show_messages()  # the library's progress lines, as the CLI shows them
    main()
