"""Where the MLflow store is and how to reach it: the tracking URI (from
`MLFLOW_TRACKING_URI`, else the project's SQLite file), the experiments and the UI's address."""

from __future__ import annotations

import os
from types import ModuleType

from pipelines.environment import project_root


def tracking_uri() -> str:
    """`MLFLOW_TRACKING_URI` if set, else an absolute SQLite file in the project root."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project_root() / 'mlflow.db'}"


def connect() -> ModuleType:
    # Downloads here are small; MLflow's progress bars would only clutter stage logs.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    return mlflow


def redacted_uri() -> str:
    """The tracking URI without any password in it, for messages."""
    import re

    return re.sub(r"//([^:/@]+):[^@/]+@", r"//\1:***@", tracking_uri())


# Tells the MLflow UI (and other tools) that an experiment holds model training runs, not
# GenAI traces; the UI still needs `?workflowType=machine_learning` in its URL (see `ui_url`).
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")


def use_experiment(name: str) -> str:
    """Make `name` the active experiment (created if new), tagged as model training; returns
    its id."""
    mlflow = connect()
    experiment = mlflow.set_experiment(name)
    # When another process creates the experiment between MLflow's look-up and its own create
    # (two stages of a first run, started together), `set_experiment` returns the experiment
    # without making it the active one, and the next run would land in "Default". By id, it does.
    mlflow.set_experiment(experiment_id=experiment.experiment_id)
    key, value = EXPERIMENT_KIND
    if experiment.tags.get(key) != value:
        mlflow.MlflowClient().set_experiment_tag(experiment.experiment_id, key, value)
    experiment_id: str = experiment.experiment_id
    return experiment_id


def data_experiment(experiment: str) -> str:
    """Where validation runs go, so the training experiment lists training runs only."""
    return f"{experiment}-data"


def ui_url(experiment: str, host: str = "127.0.0.1", port: int = 5000) -> str:
    """The MLflow UI's list of the experiment's training runs (not its GenAI overview)."""
    return f"http://{host}:{port}/#/experiments/{use_experiment(experiment)}?workflowType=machine_learning"


def store_error() -> type[Exception]:
    """The exception type the MLflow store raises (`MlflowException`), for callers outside
    this adapter to catch without importing MLflow."""
    from mlflow.exceptions import MlflowException

    return MlflowException
