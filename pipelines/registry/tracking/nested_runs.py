"""Runs nested under a parent (a search's trials), started and ended with the client API so
that any process, a Dask worker say, can own one."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from pipelines.registry.tracking.connection import connect
from pipelines.registry.tracking.run_lifecycle import process_tags
from pipelines.registry.tracking.run_logging import flatten


def start_child_run(
    parent_run_id: str, run_name: str, params: Mapping[str, Any], tags: Mapping[str, str]
) -> str:
    """A run nested under `parent_run_id` (the MLflow UI folds it under its parent), started
    with the client API so that any process can start one (a Dask worker, say)."""
    mlflow = connect()
    from mlflow.entities import Param
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    client = mlflow.MlflowClient()
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    run = client.create_run(
        experiment_id,
        run_name=run_name,
        tags={**tags, MLFLOW_PARENT_RUN_ID: parent_run_id, **process_tags()},
    )
    flat = flatten("", params, {})
    client.log_batch(run.info.run_id, params=[Param(k, str(v)[:500]) for k, v in flat.items()])
    run_id: str = run.info.run_id
    return run_id


def end_child_run(
    run_id: str, status: str, tags: Mapping[str, str], metrics: Mapping[str, float]
) -> None:
    """Tag, score and close a run `start_child_run` began (FINISHED, FAILED or KILLED)."""
    client = connect().MlflowClient()
    from mlflow.entities import Metric, RunTag

    now = int(time.time() * 1000)
    client.log_batch(
        run_id,
        metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items() if np.isfinite(v)],
        tags=[RunTag(k, str(v)) for k, v in tags.items()],
    )
    client.set_terminated(run_id, status=status)


def child_runs(parent_run_id: str) -> list[Any]:
    """The runs nested under `parent_run_id`, oldest first."""
    client = connect().MlflowClient()
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    runs: list[Any] = client.search_runs(
        [experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'",
        order_by=["attributes.start_time ASC"],
        max_results=5000,
    )
    return runs
