"""Reliability figures, in a project after a full run: concurrent runs and crash recovery.

Usage: .venv/bin/python bench/reliability.py [tries]

concurrency: `tries` times (default 5), change tabular-dnn's learning rate and start two
  `dvc repro` at once. Each outcome is counted: both succeeded (serialized), one refused (and
  with what message), or something else. Afterwards the registry must be consistent: exactly
  one @champion per model and no version without a gate verdict.
crash recovery: `tries` times, change the learning rate, start `dvc repro`, SIGKILL its whole
  process group at a random epoch between 2 and 40 of the tabular-dnn training, then run
  `dvc repro` again: it must complete, with no MLflow run left RUNNING.
params.yaml is restored at the end.
"""

from __future__ import annotations

import collections
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from pipelines.environment import env_with_venv

BIN = Path(sys.executable).parent
ENV = env_with_venv()
MODELS = ("tabular-dnn", "images-cnn", "sequence-lstm", "sequence-transformer")


def set_lr(value: float) -> None:
    from dvc.utils.serialize import modify_yaml

    with modify_yaml("params.yaml") as data:
        data["models"]["tabular-dnn"]["train"]["learning_rate"] = value


def registry_problems() -> list[str]:
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{Path.cwd() / 'mlflow.db'}")
    client = mlflow.MlflowClient()
    problems = []
    for name in MODELS:
        versions = client.search_model_versions(f"name='{name}'")
        # search results do not carry aliases: ask for each version
        champions = [
            v.version
            for v in versions
            if "champion" in client.get_model_version(name, v.version).aliases
        ]
        if len(champions) != 1:
            problems.append(f"{name}: {len(champions)} champions")
        unchecked = [v.version for v in versions if "gate" not in v.tags]
        problems += [f"{name} v{v}: no gate verdict" for v in unchecked]
    running = mlflow.search_runs(search_all_experiments=True, filter_string="status = 'RUNNING'")
    if len(running):
        problems.append(f"{len(running)} run(s) left RUNNING")
    return problems


def _dvc_repro(**kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [str(BIN / "dvc"), "repro"],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        **kwargs,
    )


def concurrency(tries: int) -> collections.Counter:
    outcomes: collections.Counter = collections.Counter()
    for i in range(tries):
        set_lr(0.0013 + 0.0001 * i)
        first, second = _dvc_repro(), _dvc_repro()
        outs = [p.communicate()[0] for p in (first, second)]
        codes = (first.returncode, second.returncode)
        if codes == (0, 0):
            outcomes["both completed (serialized)"] += 1
        elif sorted(codes)[0] == 0:
            refused = outs[codes.index(max(codes))]
            errors = [line for line in refused.splitlines() if line.startswith("ERROR")]
            outcomes[f"one refused: {errors[:1] or refused.splitlines()[-1:]}"] += 1
        else:
            outcomes[f"both failed: exit codes {codes}"] += 1
        subprocess.run([str(BIN / "dvc"), "repro"], env=ENV, capture_output=True, check=True)
        problems = registry_problems()
        outcomes["registry consistent" if not problems else f"registry: {problems}"] += 1
    return outcomes


def crash_recovery(tries: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    results = []
    for i in range(tries):
        set_lr(0.0021 + 0.0001 * i)
        kill_at = rng.randint(2, 40)
        proc = _dvc_repro()
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith(f"Epoch {kill_at}/"):
                break
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:  # it finished before that epoch
            kill_at = None
        proc.wait()
        time.sleep(1)
        rerun = subprocess.run([str(BIN / "dvc"), "repro"], env=ENV, capture_output=True, text=True)
        problems = registry_problems()
        ok = rerun.returncode == 0 and not problems
        results.append(
            f"killed at epoch {kill_at}: repro exit {rerun.returncode}, "
            f"{'consistent' if ok else problems}"
        )
    return results


def main(tries: int = 5) -> None:
    backup = Path("params.yaml").read_text()
    try:
        print("concurrency:", dict(concurrency(tries)))
        for line in crash_recovery(tries):
            print("crash:", line)
    finally:
        Path("params.yaml").write_text(backup)
        subprocess.run([str(BIN / "dvc"), "repro"], env=ENV, capture_output=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
