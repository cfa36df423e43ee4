"""What a run holds: params, metrics, curves, inputs, figures, tags and artifacts."""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipelines.registry.tracking.connection import connect

REFERENCE_DIR = "reference"  # run artifacts: the training reference drift is measured against


GOLDEN_DIR = "golden"  # run artifacts: golden raw inputs and the pipeline's predictions on them


def flatten(prefix: str, value: Any, out: dict[str, Any]) -> dict[str, Any]:
    if isinstance(value, Mapping):
        for key, inner in value.items():
            flatten(f"{prefix}.{key}" if prefix else str(key), inner, out)
    else:
        out[prefix] = value
    return out


def log_params_and_curves(params: Mapping[str, Any], history: pd.DataFrame) -> None:
    """The active run's flattened params and per-epoch curves (finite values, one step per
    epoch; a diverged run's last values are not)."""
    mlflow = connect()
    from mlflow.entities import Metric

    mlflow.log_params({k: str(v)[:500] for k, v in flatten("", params, {}).items()})
    now = int(time.time() * 1000)
    curve_metrics = [
        Metric(key=col, value=float(row[col]), timestamp=now, step=int(row["epoch"]))
        for _, row in history.iterrows()
        for col in history.columns
        if col != "epoch" and np.isfinite(float(row[col]))
    ]
    run_id = mlflow.active_run().info.run_id
    for start in range(0, len(curve_metrics), 900):
        mlflow.MlflowClient().log_batch(run_id, metrics=curve_metrics[start : start + 900])


def log_inputs(inputs: Mapping[str, tuple[str, Path, str | None]]) -> None:
    mlflow = connect()
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    for context, (name, path, digest) in inputs.items():
        with warnings.catch_warnings():
            # A local path fits both of MLflow's local sources, which are one class in two
            # registrations; it takes the first and says so each time.
            warnings.filterwarnings("ignore", "The specified dataset source can be interpreted")
            source = resolve_dataset_source(str(Path(path).resolve()))
        # MLflow's documented way to log a source without its data; its base class leaves
        # `profile` abstract.
        dataset = MetaDataset(source, name=name, digest=digest)  # type: ignore[abstract]
        mlflow.log_input(dataset, context=context)


def log_params(params: Mapping[str, Any]) -> None:
    """Flatten `params` and log to the active run those it does not hold yet (MLflow params
    cannot change once logged; a resumed run adds the new ones)."""
    mlflow = connect()
    held = mlflow.MlflowClient().get_run(mlflow.active_run().info.run_id).data.params
    flat = {k: str(v)[:500] for k, v in flatten("", params, {}).items() if k not in held}
    if flat:
        mlflow.log_params(flat)


def log_new_metrics(metrics: Mapping[str, float]) -> None:
    """Log to the active run each metric it does not already hold with the same value."""
    mlflow = connect()
    held = mlflow.MlflowClient().get_run(mlflow.active_run().info.run_id).data.metrics
    new = {k: float(v) for k, v in metrics.items() if held.get(k) != float(v)}
    if new:
        mlflow.log_metrics(new)


def log_artifacts(artifacts: Mapping[str, Path]) -> None:
    """Attach files and folders to the active run (under the given artifact folders)."""
    mlflow = connect()
    for dest, path in artifacts.items():
        if Path(path).is_dir():
            mlflow.log_artifacts(str(path), artifact_path=dest)
        elif Path(path).is_file():
            mlflow.log_artifact(str(path), artifact_path=dest)


def log_figures(figures: Mapping[str, Any], folder: str) -> None:
    """Matplotlib figures as PNG artifacts of the active run."""
    mlflow = connect()
    for name, figure in figures.items():
        mlflow.log_figure(figure, f"{folder}/{name}.png")


def set_run_tags(run_id: str, tags: Mapping[str, Any]) -> None:
    client = connect().MlflowClient()
    for key, value in tags.items():
        client.set_tag(run_id, key, str(value)[:5000])


def run_metrics(run_id: str) -> dict[str, float]:
    """The latest value of each metric of a run."""
    return dict(connect().MlflowClient().get_run(run_id).data.metrics)


def download_run_artifacts(run_id: str, path: str, dest: Path) -> Path:
    """Download a run's artifact (file or folder) to `dest`; raise if it is missing."""
    mlflow = connect()
    dest.mkdir(parents=True, exist_ok=True)
    return Path(
        mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=str(dest))
    )


def log_dict(run_id: str, data: Mapping[str, Any], artifact_file: str) -> None:
    """Attach a JSON artifact to a finished run."""
    connect().MlflowClient().log_dict(run_id, dict(data), artifact_file)
