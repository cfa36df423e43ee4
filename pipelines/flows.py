"""Thin Prefect flows and tasks over the plain step functions.

Each DVC stage runs one of these flows through the CLI. Flows take strings (paths, names) so
their parameters show up readably in the Prefect UI; they parse the params file once and pass
validated objects down. Import this module only after `orchestration.ensure_api()`.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext

from pipelines import datasets, evaluation, preprocessing, registration, training, validation
from pipelines.config import load_config


def _step(fn: Any, **options: Any) -> Any:
    return task(fn, cache_policy=NO_CACHE, **options)


ingest_task = _step(datasets.ingest, name="ingest", retries=1, retry_delay_seconds=2)
validate_task = _step(validation.validate_file, name="validate")
split_task = _step(preprocessing.split_and_fit, name="split-normalize")
train_task = _step(training.train_task, name="train")
evaluate_task = _step(evaluation.evaluate_task, name="evaluate")
# Not retried: a retry after a partial failure could register a second version.
register_task = _step(registration.register_task, name="register")


def _call(step: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a task inside a flow run, or its plain function when Prefect is off."""
    if FlowRunContext.get() is None:
        return step.fn(*args, **kwargs)
    return step(*args, **kwargs)


@flow(name="ingest", log_prints=True)
def ingest_flow(dataset: str, out: str, params: str = "params.yaml") -> str:
    cfg = load_config(params)
    return str(_call(ingest_task, dataset, cfg.dataset(dataset), Path(out)))


@flow(name="validate", log_prints=True)
def validate_flow(dataset: str, data: str, suite: str, report_dir: str) -> dict:
    report = _call(validate_task, dataset, Path(data), Path(suite), Path(report_dir))
    return asdict(report)


@flow(name="split-normalize", log_prints=True)
def split_flow(dataset: str, data: str, out_dir: str, params: str = "params.yaml") -> dict:
    cfg = load_config(params)
    prep = _call(
        split_task, dataset, Path(data), cfg.dataset(dataset), cfg.base.seed, Path(out_dir)
    )
    return asdict(prep)


@flow(name="train", log_prints=True)
def train_flow(task_name: str, data_dir: str, out_dir: str, params: str = "params.yaml") -> dict:
    cfg = load_config(params)
    return asdict(_call(train_task, cfg, task_name, Path(data_dir), Path(out_dir)))


@flow(name="evaluate", log_prints=True)
def evaluate_flow(task_name: str, model: str, data_dir: str, out_dir: str) -> dict:
    return _call(evaluate_task, task_name, Path(model), Path(data_dir), Path(out_dir))


@flow(name="register", log_prints=True)
def register_flow(
    task_name: str,
    model_dir: str,
    eval_dir: str,
    data_dir: str,
    raw_data: str,
    docs_dir: str,
    out: str,
    params: str = "params.yaml",
) -> dict:
    cfg = load_config(params)
    result = _call(
        register_task,
        cfg,
        task_name,
        model_dir=Path(model_dir),
        eval_dir=Path(eval_dir),
        data_dir=Path(data_dir),
        raw_data=Path(raw_data),
        docs_dir=Path(docs_dir),
        out=Path(out),
    )
    return asdict(result)
