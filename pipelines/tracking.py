"""The one module that talks to MLflow: tracking URI, runs, model logging and the registry."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

CHAMPION = "champion"
PREVIOUS_CHAMPION = "previous-champion"


def project_root(start: Path | None = None) -> Path:
    """The DVC project root above `start` (default: the working directory).

    `dvc exp run --temp/--queue` runs stages in a copy under `<root>/.dvc/tmp/exps/...`; runs
    logged there must still land in the real project's store, so that copy is skipped.
    """
    here = (start or Path.cwd()).resolve()
    parts = here.parts
    for i in range(len(parts) - 2):
        if parts[i : i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    for candidate in (here, *here.parents):
        if (candidate / ".dvc").is_dir() or (candidate / "dvc.yaml").is_file():
            return candidate
    return here


def tracking_uri() -> str:
    """`MLFLOW_TRACKING_URI` if set, else an absolute SQLite file in the project root."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project_root() / 'mlflow.db'}"


def _mlflow():
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    return mlflow


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    experiment_id: str
    model_uri: str | None = None
    registered_name: str | None = None
    version: str | None = None


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> dict[str, Any]:
    if isinstance(value, Mapping):
        for key, inner in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), inner, out)
    else:
        out[prefix] = value
    return out


def log_training_run(
    *,
    experiment: str,
    run_name: str,
    params: Mapping[str, Any],
    tags: Mapping[str, str],
    history: pd.DataFrame,
    metrics: Mapping[str, float],
    artifacts: Mapping[str, Path],
    model_path: Path | None = None,
    registered_name: str | None = None,
    signature_input: np.ndarray | None = None,
    model_metadata: Mapping[str, Any] | None = None,
) -> RunRecord:
    """Log one training run: params, per-epoch curves, test metrics and artifacts.

    When `model_path` and `registered_name` are given, the Keras model is logged with a numpy
    signature and registered as a new version, without any alias: promotion is a separate,
    later step. Any error marks the run FAILED, so no run is left RUNNING.
    """
    mlflow = _mlflow()
    from mlflow.entities import Metric
    from mlflow.models import infer_signature

    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name=run_name) as run:
        client = mlflow.MlflowClient()
        flat = _flatten("", params, {})
        mlflow.log_params({k: str(v)[:500] for k, v in flat.items()})
        mlflow.set_tags(dict(tags))
        now = int(time.time() * 1000)
        curve_metrics = [
            Metric(key=col, value=float(row[col]), timestamp=now, step=int(row["epoch"]))
            for _, row in history.iterrows()
            for col in history.columns
            if col != "epoch"
        ]
        for start in range(0, len(curve_metrics), 900):
            client.log_batch(run.info.run_id, metrics=curve_metrics[start : start + 900])
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
        for dest, path in artifacts.items():
            if Path(path).is_dir():
                mlflow.log_artifacts(str(path), artifact_path=dest)
            elif Path(path).is_file():
                mlflow.log_artifact(str(path), artifact_path=dest)
        record = RunRecord(run.info.run_id, run.info.experiment_id)
        if model_path is None or registered_name is None:
            return record
        import keras

        model = keras.saving.load_model(model_path, safe_mode=True)
        example = np.asarray(signature_input[:5], dtype="float64")
        signature = infer_signature(example, np.asarray(model.predict(example, verbose=0)))
        info = mlflow.keras.log_model(
            model, name="model", signature=signature, metadata=dict(model_metadata or {})
        )
        version = mlflow.register_model(info.model_uri, registered_name)
        tag_version(registered_name, str(version.version), {**tags, "run_id": run.info.run_id})
        return RunRecord(
            run.info.run_id,
            run.info.experiment_id,
            info.model_uri,
            registered_name,
            str(version.version),
        )


def load_pyfunc(model_uri: str):
    """Load a logged or registered model as a generic pyfunc model."""
    return _mlflow().pyfunc.load_model(model_uri)


def alias_version(name: str, alias: str = CHAMPION) -> str | None:
    """The version behind `name@alias`, or None when there is none."""
    mlflow = _mlflow()
    try:
        return str(mlflow.MlflowClient().get_model_version_by_alias(name, alias).version)
    except mlflow.exceptions.MlflowException:
        return None


def tag_version(name: str, version: str, tags: Mapping[str, Any]) -> None:
    client = _mlflow().MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, str(value)[:5000])


@dataclass(frozen=True)
class VersionInfo:
    name: str
    version: str
    run_id: str
    source: str
    tags: dict[str, str]
    aliases: list[str]


def version_info(name: str, ref: str) -> VersionInfo:
    """A registered version by number (`3`) or alias (`champion`)."""
    mlflow = _mlflow()
    client = mlflow.MlflowClient()
    mv = (
        client.get_model_version(name, ref)
        if ref.isdigit()
        else client.get_model_version_by_alias(name, ref)
    )
    return VersionInfo(
        name,
        str(mv.version),
        mv.run_id or mv.tags.get("run_id", ""),
        mv.source,
        dict(mv.tags),
        list(mv.aliases),
    )


def promote(name: str, version: str) -> str | None:
    """Make `version` the champion; the champion it replaces keeps `previous-champion`.

    The previous-champion alias is set first, so a failure between the two steps leaves the old
    champion in place. Returns the replaced version, if any.
    """
    client = _mlflow().MlflowClient()
    current = alias_version(name, CHAMPION)
    if current is not None and current != version:
        client.set_registered_model_alias(name, PREVIOUS_CHAMPION, current)
    client.set_registered_model_alias(name, CHAMPION, version)
    return current if current != version else None


def rollback(name: str) -> tuple[str, str]:
    """Swap `champion` and `previous-champion`; return (new champion, new previous)."""
    client = _mlflow().MlflowClient()
    current, previous = alias_version(name, CHAMPION), alias_version(name, PREVIOUS_CHAMPION)
    if previous is None or current is None:
        raise LookupError(f"{name}: no {PREVIOUS_CHAMPION} version to roll back to")
    client.set_registered_model_alias(name, CHAMPION, previous)
    client.set_registered_model_alias(name, PREVIOUS_CHAMPION, current)
    return previous, current


def download_run_artifacts(run_id: str, path: str, dest: Path) -> Path:
    """Download a run's artifact (file or folder) to `dest`; raise if it is missing."""
    mlflow = _mlflow()
    dest.mkdir(parents=True, exist_ok=True)
    return Path(
        mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=str(dest))
    )


def log_dict(run_id: str, data: Mapping[str, Any], artifact_file: str) -> None:
    """Attach a JSON artifact to a finished run."""
    _mlflow().MlflowClient().log_dict(run_id, dict(data), artifact_file)
