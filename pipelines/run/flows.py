"""Thin Prefect flows and tasks over the plain stages (`pipelines.run.stages`).

Each DVC stage runs one of these flows through the CLI. Flows take strings (paths, names) so
their parameters show up readably in the Prefect UI; the stage body is shared with the
Prefect-free path, only each step becomes a Prefect task. Import this module only after
`orchestration.ensure_api()`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from pipelines.errors import KnownFailure
from pipelines.run import stages
from pipelines.run.stage_table import STAGES


def _retry_step(task: Any, task_run: Any, state: Any) -> bool:
    """A step in this process: retry any fault but a known failure (bad data, bad params),
    which fails the same way every time. `stage_process._retry_stage` is the same rule for a stage
    in a child process, which can only be judged by its output."""
    try:
        state.result()
    except KnownFailure:
        return False
    except Exception:
        return True
    return False


# The step functions a stage may run, with their Prefect task options (the stage table's).
@cache
def _options() -> dict[Callable[..., Any], dict[str, Any]]:
    return {stage.step_function(): stage.task for stage in STAGES}


@cache
def as_task(fn: Callable[..., Any]) -> Any:
    """`fn` as a Prefect task, built on first use (nothing is built at import time)."""
    options: dict[str, Any] = {"cache_policy": NO_CACHE, "retry_condition_fn": _retry_step}
    return task(fn, **options, **_options()[fn])


@flow(name="ingest", flow_run_name="ingest-{dataset}", log_prints=True)
def ingest_flow(dataset: str, out: str, params: str = "params.yaml") -> str:
    return stages.ingest(dataset, out, params, step=as_task)


@flow(name="validate", flow_run_name="validate-{dataset}", log_prints=True)
def validate_flow(
    dataset: str, data: str, suite: str, report_dir: str, params: str = "params.yaml"
) -> dict:
    return stages.validate(dataset, data, suite, report_dir, params, step=as_task)


@flow(name="split-normalize", flow_run_name="split-{dataset}", log_prints=True)
def split_flow(dataset: str, data: str, out_dir: str, params: str = "params.yaml") -> dict:
    return stages.split(dataset, data, out_dir, params, step=as_task)


@flow(name="tune", flow_run_name="tune-{model_name}", log_prints=True)
def tune_flow(model_name: str, data_dir: str, out_dir: str, params: str = "params.yaml") -> dict:
    return stages.tune(model_name, data_dir, out_dir, params, step=as_task)


@flow(name="train", flow_run_name="train-{model_name}", log_prints=True)
def train_flow(
    model_name: str,
    data_dir: str,
    out_dir: str,
    search_dir: str | None = None,
    params: str = "params.yaml",
) -> dict:
    return stages.train(model_name, data_dir, out_dir, search_dir, params, step=as_task)


@flow(name="evaluate", flow_run_name="evaluate-{model_name}", log_prints=True)
def evaluate_flow(
    model_name: str,
    model: str,
    data_dir: str,
    out_dir: str,
    run: str | None = None,
    params: str = "params.yaml",
) -> dict:
    return stages.evaluate(model_name, model, data_dir, out_dir, run, params, step=as_task)


@flow(name="register", flow_run_name="register-{model_name}", log_prints=True)
def register_flow(
    model_name: str,
    model_dir: str,
    eval_dir: str,
    data_dir: str,
    raw_data: str,
    docs_dir: str,
    out: str,
    params: str = "params.yaml",
) -> dict:
    return stages.register(
        model_name, model_dir, eval_dir, data_dir, raw_data, docs_dir, out, params, step=as_task
    )
