"""Register: log the run, register the version, and promote it behind the quality gate."""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines import tracking
from pipelines.config import PipelineConfig
from pipelines.drift import REFERENCE_FILE
from pipelines.evaluation import METRICS_FILE, PLOT_FILE, PREDICTIONS_FILE
from pipelines.gate import apply_gate
from pipelines.lineage import dvc_lock_hashes, file_md5, git_state, library_versions
from pipelines.preprocessing import (
    SPEC_FILE,
    Preprocessing,
    encode_labels,
    load_split,
    split_shards_of,
)
from pipelines.promotion import (
    GOLDEN_ROWS,
    Check,
    compare_with_champion,
    parity_check,
    score_in_fresh_process,
)
from pipelines.serving import GOLDEN_DIR
from pipelines.streaming import take_rows
from pipelines.training import HISTORY_FILE, MODEL_FILE, SUMMARY_FILE

LINEAGE_FILE = "lineage.json"


@dataclass(frozen=True)
class Registration:
    task: str
    model_name: str
    version: str | None
    run_id: str
    promoted: bool
    previous_champion: str | None
    checks: list[dict]
    gate_failures: list[str]


_INPUTS = {
    "tabular": "raw feature rows, shape (n, features), columns in the order of `features`",
    "images": "raw pixel arrays, shape (n, height, width), values as in the source data",
    "sequence": "raw windows, shape (n, window, 1), oldest value first, in original units",
}
_OUTPUTS = {
    "classification": "class probabilities, shape (n, classes), in the order of `classes`",
    "regression": "the next value, shape (n, 1), in original units",
}


def model_metadata(name: str, task: str, prep: Preprocessing) -> dict:
    """What a caller needs to use the model: it travels with every registered version."""
    return {
        "model_name": name,
        "task": task,
        "modality": prep.modality,
        "input": _INPUTS[prep.modality],
        "input_shape": prep.input_shape,
        "features": prep.features,
        "label": prep.label,
        "classes": prep.classes,
        "output": _OUTPUTS[prep.task_type],
    }


COMPARE_ROWS = 100_000  # test rows a sharded dataset's champion comparison uses


def comparison_rows(
    data_dir: Path, prep: Preprocessing, seed: int
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """The test rows the champion is compared on: (positions in the test split or None for
    all, raw inputs, targets). A sharded split gives a seeded sample of `COMPARE_ROWS`."""
    if not prep.sharded:
        return None, *load_split(data_dir, "test", prep)
    total = prep.rows["test"]
    rng = np.random.default_rng(seed)
    positions = np.sort(rng.choice(total, size=min(total, COMPARE_ROWS), replace=False))
    x, labels = take_rows(split_shards_of(data_dir, "test"), prep.features, prep.label, positions)
    return positions, x, encode_labels(labels, prep)


def register_task(
    cfg: PipelineConfig,
    task: str,
    *,
    model_dir: Path,
    eval_dir: Path,
    data_dir: Path,
    raw_data: Path,
    docs_dir: Path,
    out: Path,
) -> Registration:
    """Log the training run, register the model as a new version, and promote it to
    `@champion` only if it passes every check: absolute thresholds, the trivial baselines, not
    significantly worse than the current champion on the same test rows, and serving parity
    from a fresh process. A failed check is a normal outcome: the version stays registered for
    inspection, without the alias, tagged with what failed and by how much."""
    task_cfg, gate = cfg.task(task), cfg.task(task).gate
    metrics = json.loads((eval_dir / METRICS_FILE).read_text())
    summary = json.loads((model_dir / SUMMARY_FILE).read_text())
    history = pd.read_csv(model_dir / HISTORY_FILE)
    prep = Preprocessing.load(data_dir / SPEC_FILE)
    positions, x_test, y_test = comparison_rows(data_dir, prep, cfg.base.seed)
    if positions is None:
        predictions = np.load(eval_dir / PREDICTIONS_FILE)
    else:  # read only the sampled rows' predictions
        predictions = np.asarray(np.load(eval_dir / PREDICTIONS_FILE, mmap_mode="r")[positions])
    name = task  # one registered model per entry, named after it: `tabular-dnn`
    for version in tracking.mark_incomplete_versions(name):
        print(f"{name} version {version} never got a gate verdict: tagged incomplete")
    champion_before = tracking.alias_version(name)

    thresholds = apply_gate(gate, metrics["test"], metrics["baselines"])
    tags = {
        "task": task_cfg.task,
        "model_name": name,
        "family": task_cfg.family,
        "dataset": task_cfg.dataset,
        "modality": prep.modality,
        "seed": str(cfg.base.seed),
        "data_md5": file_md5(raw_data),
        **git_state(),
    }
    params = {
        "dataset": task_cfg.dataset,
        "family": task_cfg.family,
        "seed": cfg.base.seed,
        "model": cfg.model_params(task).model_dump(),
        "train": task_cfg.train.model_dump(),
        "gate": gate.model_dump(),
    }
    run_metrics = {
        **{f"test_{k}": v for k, v in metrics["test"].items()},
        **{
            f"baseline_{baseline}_{k}": v
            for baseline, values in metrics["baselines"].items()
            for k, v in values.items()
        },
        "best_epoch": summary["best_epoch"],
        "stopped_epoch": summary["stopped_epoch"],
    }
    with tempfile.TemporaryDirectory() as tmp:
        golden = Path(tmp)
        np.save(golden / "inputs.npy", x_test[:GOLDEN_ROWS])
        np.save(golden / "predictions.npy", predictions[:GOLDEN_ROWS])
        record = tracking.log_training_run(
            experiment=cfg.base.experiment,
            run_name=f"{name}-seed{cfg.base.seed}",
            params=params,
            tags=tags,
            history=history,
            metrics=run_metrics,
            artifacts={
                "evaluation": eval_dir / PLOT_FILE,
                "training": model_dir / HISTORY_FILE,
                "data_docs": docs_dir,
                "preprocessing": data_dir / SPEC_FILE,
                tracking.REFERENCE_DIR: data_dir / REFERENCE_FILE,
                GOLDEN_DIR: golden,
            },
            model_path=model_dir / MODEL_FILE,
            registered_name=name,
            model_metadata=model_metadata(name, task_cfg.task, prep),
            model_artifacts={"reference": data_dir / REFERENCE_FILE},
        )
        checks = [Check("thresholds", thresholds.passed, "; ".join(thresholds.checks))]
        # One fresh process (as `mlflow models serve` loads a model) scores the new version on
        # the golden raw inputs and the current champion on the test rows.
        new_uri = f"models:/{name}/{record.version}"
        jobs = [(new_uri, golden / "inputs.npy")]
        if champion_before is not None:
            test_inputs = Path(tmp) / "test_inputs.npy"
            np.save(test_inputs, x_test)
            jobs.append((f"models:/{name}/{champion_before}", test_inputs))
        scores = score_in_fresh_process(tracking.tracking_uri(), jobs)
        if champion_before is not None:
            checks.append(
                compare_with_champion(
                    scores[1],
                    y_test,
                    predictions,
                    prep.task_type,
                    gate.champion_alpha,
                    gate.champion_tolerance,
                    gate.bootstrap_resamples,
                    cfg.base.seed,
                )
            )
        else:
            checks.append(Check("champion", True, "no champion yet"))
        checks.append(
            parity_check(new_uri, scores[0], predictions[:GOLDEN_ROWS], gate.parity_tolerance)
        )
    passed = all(c.passed for c in checks)
    failures = [
        *thresholds.failures,
        *(f"{c.name}: {c.detail}" for c in checks[1:] if not c.passed),
    ]
    for check in checks:
        print(f"{'ok  ' if check.passed else 'FAIL'} {check.name}: {check.detail}")
    version = str(record.version)
    tracking.tag_version(
        name,
        version,
        {
            "gate": "passed" if passed else "failed",
            **{f"gate.{c.name}": ("ok: " if c.passed else "FAILED: ") + c.detail for c in checks},
            **({"gate.failures": " | ".join(failures)} if failures else {}),
        },
    )
    previous = tracking.promote(name, version) if passed else None
    tracking.log_dict(
        record.run_id,
        {
            "model": {
                "name": name,
                "version": version,
                "promoted": passed,
                "previous_champion": previous,
            },
            "git": {key: tags[key] for key in ("git_commit", "git_dirty")},
            "data": {
                "md5": tags["data_md5"],
                "dvc_lock": dvc_lock_hashes(
                    tracking.project_root() / "dvc.lock",
                    [f"ingest@{task_cfg.dataset}", f"split@{task_cfg.dataset}"],
                ),
            },
            "params": params,
            "seed": cfg.base.seed,
            "versions": library_versions(),
            "epochs": {"best": summary["best_epoch"], "stopped": summary["stopped_epoch"]},
            "test_metrics": metrics,
            "gate": {"passed": passed, "checks": [asdict(c) for c in checks]},
        },
        LINEAGE_FILE,
    )
    result = Registration(
        task=task,
        model_name=name,
        version=version,
        run_id=record.run_id,
        promoted=passed,
        previous_champion=previous,
        checks=[asdict(c) for c in checks],
        gate_failures=failures,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(asdict(result), indent=2) + "\n")
    if passed:
        print(
            f"{name} version {version} is @{tracking.CHAMPION}"
            + (f"; version {previous} is @{tracking.PREVIOUS_CHAMPION}" if previous else "")
        )
    else:
        print(
            f"{name} version {version} registered but NOT promoted; @{tracking.CHAMPION} "
            f"stays {champion_before}. Failed: " + " | ".join(failures)
        )
    return result
