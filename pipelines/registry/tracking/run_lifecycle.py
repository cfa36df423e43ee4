"""A run from start to end: opened with its owner's process tags and a lease the owner renews,
ended FINISHED, FAILED or KILLED, and closed by the next process when its owner died without
closing it (its process gone on this host, or its lease expired on any host)."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from pipelines.errors import failure_summary
from pipelines.registry.tracking.connection import connect, use_experiment
from pipelines.registry.tracking.model_versions import tag_incomplete
from pipelines.registry.tracking.run_logging import (
    log_artifacts,
    log_inputs,
    log_new_metrics,
    log_params,
    log_params_and_curves,
)

log = logging.getLogger(__name__)

_PID_TAG, _HOST_TAG = "pipelines.pid", "pipelines.host"
# A RUNNING run's lease: until when (Unix seconds) its owner vouches for it. The owner renews it
# while it works; once it has expired, the next stage on any host closes the run as FAILED.
LEASE_TAG = "pipelines.lease_until"
LEASE_ENV = "PIPELINES_RUN_LEASE_S"
DEFAULT_LEASE_S = 600.0


def lease_seconds() -> float:
    """How long a lease lasts (`PIPELINES_RUN_LEASE_S`, default 600 s); renewed every third."""
    return float(os.environ.get(LEASE_ENV) or DEFAULT_LEASE_S)


def process_tags() -> dict[str, str]:
    """Who owns a run while it is RUNNING, so a later process can tell it was killed."""
    return {_PID_TAG: str(os.getpid()), _HOST_TAG: socket.gethostname()}


def _lease_tag() -> dict[str, str]:
    return {LEASE_TAG: f"{time.time() + lease_seconds():.0f}"}


@contextmanager
def _leased(run_id: str) -> Iterator[None]:
    """Renew run `run_id`'s lease from a background thread while the block runs. A failed
    renewal (a busy store) is tried again at the next beat; the lease covers three beats."""
    client = connect().MlflowClient()
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(lease_seconds() / 3):
            with contextlib.suppress(Exception):
                client.set_tag(run_id, LEASE_TAG, _lease_tag()[LEASE_TAG])

    beat = threading.Thread(target=renew, name=f"lease-{run_id[:8]}", daemon=True)
    beat.start()
    try:
        yield
    finally:
        stop.set()
        beat.join(timeout=5)


def _abandoned(tags: Mapping[str, str], host: str, now: float) -> str | None:
    """Why a RUNNING run with these tags is abandoned, or None while its owner may live: its
    lease expired (any host), or its process on this host is gone."""
    lease = tags.get(LEASE_TAG, "")
    if lease.replace(".", "", 1).isdigit() and float(lease) < now:
        owner = f"process {tags.get(_PID_TAG, '?')} on {tags.get(_HOST_TAG, '?')}"
        return f"{owner} stopped renewing its lease (expired {now - float(lease):.0f} s ago)"
    pid = tags.get(_PID_TAG, "")
    if tags.get(_HOST_TAG) == host and pid.isdigit() and not _alive(int(pid)):
        return f"process {pid} on {host} ended without closing this run (killed)"
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def close_abandoned_runs(experiment: str) -> list[str]:
    """Mark FAILED every RUNNING run of `experiment` that is abandoned (`_abandoned`: its lease
    expired, or its process on this host is gone), and tag any model version it registered as
    incomplete. Returns the run ids closed.

    A stage killed mid-way (SIGKILL, OOM, a lost machine, a container that restarted with a
    new host name) cannot close its own run; the next stage that logs to the same experiment
    does it here, on whichever host it runs."""
    mlflow = connect()
    client = mlflow.MlflowClient()
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    closed = []
    host, now = socket.gethostname(), time.time()
    for run in client.search_runs(
        [found.experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=1000
    ):
        reason = _abandoned(run.data.tags, host, now)
        if reason is None:
            continue
        client.set_tag(run.info.run_id, "failure", reason)
        client.set_terminated(run.info.run_id, status="FAILED")
        tag_incomplete(
            client,
            client.search_model_versions(f"run_id = '{run.info.run_id}'"),
            f"registration {reason}",
        )
        closed.append(run.info.run_id)
        log.info(f"closed abandoned MLflow run {run.info.run_id}: {reason}")
    return closed


def run_state(run_id: str) -> tuple[str, dict[str, str]] | None:
    """(status, tags) of a run in this store, or None when the store has no such run."""
    mlflow = connect()
    from mlflow.exceptions import MlflowException

    try:
        run = mlflow.MlflowClient().get_run(run_id)
    except MlflowException as err:
        if err.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        return None
    return run.info.status, dict(run.data.tags)


@contextmanager
def open_run(
    experiment: str,
    *,
    resume: str | None = None,
    run_name: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> Iterator[str]:
    """Start a run of `experiment` (or resume the run `resume`), make it the active run and
    yield its id. It ends FINISHED, or FAILED with a `failure` tag naming the error, or KILLED
    on Ctrl-C; a process killed outright leaves it to the next process's
    `close_abandoned_runs`, which the process tags make possible."""
    mlflow = connect()
    use_experiment(experiment)
    close_abandoned_runs(experiment)
    owner = {**(tags or {}), **process_tags(), **_lease_tag()}
    if resume is None:
        run = mlflow.start_run(run_name=run_name, tags=owner)
    else:
        run = mlflow.start_run(run_id=resume)
        mlflow.set_tags(owner)
    run_id = run.info.run_id
    try:
        with _leased(run_id):
            yield run_id
    except KeyboardInterrupt:
        mlflow.set_tag("failure", "interrupted")
        mlflow.end_run(status="KILLED")
        raise
    except BaseException as err:
        mlflow.set_tag("failure", failure_summary(err))
        mlflow.end_run(status="FAILED")
        raise
    mlflow.end_run(status="FINISHED")


@contextmanager
def training_run(
    *,
    experiment: str,
    run_name: str,
    params: Mapping[str, Any],
    tags: Mapping[str, str],
    history: pd.DataFrame,
    metrics: Mapping[str, float],
    artifacts: Mapping[str, Path],
    inputs: Mapping[str, tuple[str, Path, str | None]] | None = None,
    resume: str | None = None,
) -> Iterator[str]:
    """Complete a training run for registration and yield its id while it is still open, for
    `register_version`. `resume`: the run the train stage opened (its params, live curves and
    inputs are there already; the new params, tags, metrics and artifacts are added). Without
    it, a new run gets everything, the curves from `history`. Any error marks the run FAILED.

    `inputs`: context (training, validation, test) -> (dataset name, file, digest), the
    digest being DVC's md5 of the file from `dvc.lock`; MLflow shows them in the runs list's
    Dataset column."""
    mlflow = connect()
    with open_run(experiment, resume=resume, run_name=run_name, tags=tags) as run_id:
        if resume is None:
            log_params_and_curves(params, history)
            log_inputs(inputs or {})
        else:
            log_params(params)
        mlflow.set_tags(dict(tags))
        log_new_metrics(metrics)
        log_artifacts(artifacts)
        yield run_id


def log_validation_run(
    *,
    experiment: str,
    run_name: str,
    tags: Mapping[str, str],
    metrics: Mapping[str, float],
    docs_dir: Path,
    success: bool,
) -> str:
    """One run per validation: Data Docs, summary and drift scores; FAILED when the data did
    not pass, so failed validations stand out in the MLflow UI."""
    mlflow = connect()
    use_experiment(experiment)
    close_abandoned_runs(experiment)
    run = mlflow.start_run(run_name=run_name, tags={**tags, **process_tags()})
    status = "FAILED"
    try:
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
        mlflow.log_artifacts(str(docs_dir), artifact_path="data_docs")
        status = "FINISHED" if success else "FAILED"
    finally:
        mlflow.end_run(status=status)
    run_id: str = run.info.run_id
    return run_id
