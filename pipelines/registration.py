"""Register: log the run to MLflow and, if the quality gate passes, register the model."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from pipelines import tracking
from pipelines.config import PipelineConfig
from pipelines.evaluation import METRICS_FILE, PLOT_FILE
from pipelines.gate import GateVerdict, apply_gate
from pipelines.lineage import file_md5, git_state
from pipelines.preprocessing import SPEC_FILE, Preprocessing, load_split
from pipelines.training import HISTORY_FILE, MODEL_FILE, SUMMARY_FILE


@dataclass(frozen=True)
class Registration:
    task: str
    registered: bool
    model_name: str
    version: str | None
    run_id: str
    gate_passed: bool
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
    """Log the task's training run, apply the gate and register a new `champion` version only
    when it passes. A failed gate is a normal outcome: the run is logged, nothing registered."""
    task_cfg = cfg.task(task)
    metrics = json.loads((eval_dir / METRICS_FILE).read_text())
    summary = json.loads((model_dir / SUMMARY_FILE).read_text())
    history = pd.read_csv(model_dir / HISTORY_FILE)
    prep = Preprocessing.load(data_dir / SPEC_FILE)
    verdict: GateVerdict = apply_gate(task_cfg.gate, metrics["test"], metrics["baselines"])
    print(verdict.summary())

    name = task  # one registered model per entry, named after it: `tabular-dnn`
    tags = {
        "task": task_cfg.task,
        "model_name": task,
        "family": task_cfg.family,
        "dataset": task_cfg.dataset,
        "modality": prep.modality,
        "seed": str(cfg.base.seed),
        "data_md5": file_md5(raw_data),
        "gate": "passed" if verdict.passed else "failed",
        **git_state(),
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
    params = {
        "dataset": task_cfg.dataset,
        "family": task_cfg.family,
        "seed": cfg.base.seed,
        "model": cfg.model_params(task).model_dump(),
        "train": task_cfg.train.model_dump(),
    }
    artifacts = {
        "evaluation": eval_dir / PLOT_FILE,
        "training": model_dir / HISTORY_FILE,
        "data_docs": docs_dir,
        "preprocessing": data_dir / SPEC_FILE,
    }
    x_test, _ = load_split(data_dir, "test", prep)
    record = tracking.log_training_run(
        experiment=cfg.base.experiment,
        run_name=f"{name}-seed{cfg.base.seed}",
        params=params,
        tags=tags,
        history=history,
        metrics=run_metrics,
        artifacts=artifacts,
        model_path=model_dir / MODEL_FILE if verdict.passed else None,
        registered_name=name if verdict.passed else None,
        signature_input=x_test,
        model_metadata=model_metadata(name, task_cfg.task, prep),
    )
    result = Registration(
        task=task,
        registered=record.version is not None,
        model_name=name,
        version=record.version,
        run_id=record.run_id,
        gate_passed=verdict.passed,
        gate_failures=verdict.failures,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(asdict(result), indent=2) + "\n")
    if result.registered:
        print(
            f"registered {name} version {result.version} as @{tracking.CHAMPION} "
            f"(run {record.run_id})"
        )
    else:
        print(f"gate failed for {name}: nothing registered (run {record.run_id} logged)")
    return result
