"""The one module that talks to MLflow: tracking URI, runs, model logging and the registry."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipelines.errors import failure_summary

CHAMPION = "champion"
PREVIOUS_CHAMPION = "previous-champion"
REFERENCE_DIR = "reference"  # run artifacts: the training reference drift is measured against
GOLDEN_DIR = "golden"  # run artifacts: golden raw inputs and the pipeline's predictions on them
RAW_MODEL_CODE = Path(__file__).with_name("raw_model.py")
# The Keras model's artifact name inside each version; raw_model.py (which must not import this
# package) spells the same name, and a test keeps the two equal.
KERAS_ARTIFACT = "keras_model"
_PID_TAG, _HOST_TAG = "pipelines.pid", "pipelines.host"


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
    # Downloads here are small; MLflow's progress bars would only clutter stage logs.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    return mlflow


# Tells the MLflow UI (and other tools) that an experiment holds model training runs, not
# GenAI traces; the UI still needs `?workflowType=machine_learning` in its URL (see `ui_url`).
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")


def use_experiment(name: str) -> str:
    """Make `name` the active experiment (created if new), tagged as model training; returns
    its id."""
    mlflow = _mlflow()
    experiment = mlflow.set_experiment(name)
    key, value = EXPERIMENT_KIND
    if experiment.tags.get(key) != value:
        mlflow.MlflowClient().set_experiment_tag(experiment.experiment_id, key, value)
    return experiment.experiment_id


def data_experiment(experiment: str) -> str:
    """Where validation runs go, so the training experiment lists training runs only."""
    return f"{experiment}-data"


def ui_url(experiment: str, host: str = "127.0.0.1", port: int = 5000) -> str:
    """The MLflow UI's list of the experiment's training runs (not its GenAI overview)."""
    return f"http://{host}:{port}/#/experiments/{use_experiment(experiment)}?workflowType=machine_learning"


def _process_tags() -> dict[str, str]:
    """Who owns a run while it is RUNNING, so a later process can tell it was killed."""
    return {_PID_TAG: str(os.getpid()), _HOST_TAG: socket.gethostname()}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def close_abandoned_runs(experiment: str) -> list[str]:
    """Mark FAILED every RUNNING run of `experiment` whose process (on this host) is gone, and
    tag any model version it registered as incomplete. Returns the run ids closed.

    A stage killed mid-way (SIGKILL, OOM, a lost machine) cannot close its own run; the next
    stage that logs to the same experiment does it here."""
    mlflow = _mlflow()
    client = mlflow.MlflowClient()
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    closed = []
    host = socket.gethostname()
    for run in client.search_runs(
        [found.experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=1000
    ):
        tags = run.data.tags
        pid = tags.get(_PID_TAG, "")
        if tags.get(_HOST_TAG) != host or not pid.isdigit() or _alive(int(pid)):
            continue
        reason = f"process {pid} on {host} ended without closing this run (killed)"
        client.set_tag(run.info.run_id, "failure", reason)
        client.set_terminated(run.info.run_id, status="FAILED")
        _tag_incomplete(
            client,
            client.search_model_versions(f"run_id = '{run.info.run_id}'"),
            f"registration {reason}",
        )
        closed.append(run.info.run_id)
        print(f"closed abandoned MLflow run {run.info.run_id}: {reason}")
    return closed


def _tag_incomplete(client: Any, versions: Sequence[Any], why: str) -> list[str]:
    """Tag each of `versions` that has no gate verdict as incomplete; returns those tagged."""
    tagged = []
    for mv in versions:
        if "gate" not in mv.tags:
            client.set_model_version_tag(mv.name, mv.version, "gate", f"incomplete: {why}")
            tagged.append(str(mv.version))
    return tagged


def mark_incomplete_versions(name: str) -> list[str]:
    """Tag versions of `name` that never got a gate verdict (their registration stopped
    half-way) as incomplete, so nobody mistakes them for checked ones. A version whose run is
    still RUNNING is a registration in flight (its process alive: `close_abandoned_runs`
    closes the others first) and is left alone. They never hold an alias: promotion is the
    last step. Returns the versions tagged."""
    mlflow = _mlflow()
    client = mlflow.MlflowClient()
    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except mlflow.exceptions.MlflowException as err:
        if err.error_code == "RESOURCE_DOES_NOT_EXIST":  # no such registered model yet
            return []
        raise
    unfinished = [mv for mv in versions if "gate" not in mv.tags]
    settled = [
        mv for mv in unfinished if not mv.run_id or _run_status(client, mv.run_id) != "RUNNING"
    ]
    return _tag_incomplete(client, settled, "registration stopped before the gate")


def _run_status(client: Any, run_id: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id).info.status
    except MlflowException as err:
        if err.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        return None


def _requirements() -> list[str]:
    """Pinned requirements of the served model, without importing TensorFlow to infer them."""
    from pipelines.registry.lineage import installed_versions

    return [f"{name}=={version}" for name, version in installed_versions().items()]


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> dict[str, Any]:
    if isinstance(value, Mapping):
        for key, inner in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), inner, out)
    else:
        out[prefix] = value
    return out


def _log_params_and_curves(params: Mapping[str, Any], history: pd.DataFrame) -> None:
    """The active run's flattened params and per-epoch curves (finite values, one step per
    epoch; a diverged run's last values are not)."""
    mlflow = _mlflow()
    from mlflow.entities import Metric

    mlflow.log_params({k: str(v)[:500] for k, v in _flatten("", params, {}).items()})
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
    mlflow = _mlflow()
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    for context, (name, path, digest) in inputs.items():
        source = resolve_dataset_source(str(Path(path).resolve()))
        mlflow.log_input(MetaDataset(source, name=name, digest=digest), context=context)


def run_state(run_id: str) -> tuple[str, dict[str, str]] | None:
    """(status, tags) of a run in this store, or None when the store has no such run."""
    mlflow = _mlflow()
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
    mlflow = _mlflow()
    use_experiment(experiment)
    close_abandoned_runs(experiment)
    if resume is None:
        run = mlflow.start_run(run_name=run_name, tags={**(tags or {}), **_process_tags()})
    else:
        run = mlflow.start_run(run_id=resume)
        mlflow.set_tags({**(tags or {}), **_process_tags()})
    run_id = run.info.run_id
    try:
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


def log_params(params: Mapping[str, Any]) -> None:
    """Flatten `params` and log to the active run those it does not hold yet (MLflow params
    cannot change once logged; a resumed run adds the new ones)."""
    mlflow = _mlflow()
    held = mlflow.MlflowClient().get_run(mlflow.active_run().info.run_id).data.params
    flat = {k: str(v)[:500] for k, v in _flatten("", params, {}).items() if k not in held}
    if flat:
        mlflow.log_params(flat)


def log_new_metrics(metrics: Mapping[str, float]) -> None:
    """Log to the active run each metric it does not already hold with the same value."""
    mlflow = _mlflow()
    held = mlflow.MlflowClient().get_run(mlflow.active_run().info.run_id).data.metrics
    new = {k: float(v) for k, v in metrics.items() if held.get(k) != float(v)}
    if new:
        mlflow.log_metrics(new)


def log_artifacts(artifacts: Mapping[str, Path]) -> None:
    """Attach files and folders to the active run (under the given artifact folders)."""
    mlflow = _mlflow()
    for dest, path in artifacts.items():
        if Path(path).is_dir():
            mlflow.log_artifacts(str(path), artifact_path=dest)
        elif Path(path).is_file():
            mlflow.log_artifact(str(path), artifact_path=dest)


def epoch_logger(run_id: str, every_s: float = 1.0):
    """A Keras callback that logs each epoch's finite metrics to run `run_id` as it trains
    (step = epoch, from 1), written at most every `every_s` seconds and at the end, so the
    curves grow in the MLflow UI while the model trains."""
    import keras
    from mlflow.entities import Metric

    client = _mlflow().MlflowClient()

    class EpochLogger(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.pending: list[Metric] = []
            self.flushed = time.monotonic()

        def flush(self) -> None:
            for start in range(0, len(self.pending), 900):
                client.log_batch(run_id, metrics=self.pending[start : start + 900])
            self.pending, self.flushed = [], time.monotonic()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            now = int(time.time() * 1000)
            self.pending += [
                Metric(key=key, value=float(value), timestamp=now, step=epoch + 1)
                for key, value in (logs or {}).items()
                if np.isfinite(float(value))
            ]
            if time.monotonic() - self.flushed >= every_s:
                self.flush()

        def on_train_end(self, logs: dict | None = None) -> None:
            self.flush()

    return EpochLogger()


def start_child_run(
    parent_run_id: str, run_name: str, params: Mapping[str, Any], tags: Mapping[str, str]
) -> str:
    """A run nested under `parent_run_id` (the MLflow UI folds it under its parent), started
    with the client API so that any process can start one (a Dask worker, say)."""
    mlflow = _mlflow()
    from mlflow.entities import Param
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    client = mlflow.MlflowClient()
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    run = client.create_run(
        experiment_id,
        run_name=run_name,
        tags={**tags, MLFLOW_PARENT_RUN_ID: parent_run_id, **_process_tags()},
    )
    flat = _flatten("", params, {})
    client.log_batch(run.info.run_id, params=[Param(k, str(v)[:500]) for k, v in flat.items()])
    return run.info.run_id


def end_child_run(
    run_id: str, status: str, tags: Mapping[str, str], metrics: Mapping[str, float]
) -> None:
    """Tag, score and close a run `start_child_run` began (FINISHED, FAILED or KILLED)."""
    client = _mlflow().MlflowClient()
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
    client = _mlflow().MlflowClient()
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    return client.search_runs(
        [experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'",
        order_by=["attributes.start_time ASC"],
        max_results=5000,
    )


def log_figures(figures: Mapping[str, Any], folder: str) -> None:
    """Matplotlib figures as PNG artifacts of the active run."""
    mlflow = _mlflow()
    for name, figure in figures.items():
        mlflow.log_figure(figure, f"{folder}/{name}.png")


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
    mlflow = _mlflow()
    with open_run(experiment, resume=resume, run_name=run_name, tags=tags) as run_id:
        if resume is None:
            _log_params_and_curves(params, history)
            log_inputs(inputs or {})
        else:
            log_params(params)
        mlflow.set_tags(dict(tags))
        log_new_metrics(metrics)
        log_artifacts(artifacts)
        yield run_id


def raw_signature(metadata: Mapping[str, Any]):
    """The version's MLflow signature, for the registry's schema view: a float64 tensor of raw
    inputs, shape (-1, *input_shape), and a float32 tensor of answers, one column per class
    (or the one forecast value); a classifier also takes the param `labels`.

    The request checks stay the wrapper's (`raw_model.check_request`): they name the bad
    column, value or shape, and accept rows, named columns in any order and whole numbers,
    which MLflow's own enforcement of a tensor signature would refuse or, for named columns,
    silently reorder. So the signature is marked the way MLflow marks one it derives from the
    model's type hints: MLflow then leaves validation to the model and passes the request's
    `inputs` through as sent."""
    from mlflow.models import ModelSignature
    from mlflow.types import ParamSchema, ParamSpec, Schema, TensorSpec

    classes = metadata.get("classes") or []
    raw = np.dtype("str") if metadata.get("modality") == "text" else np.dtype("float64")
    signature = ModelSignature(
        inputs=Schema([TensorSpec(raw, (-1, *metadata["input_shape"]))]),
        outputs=Schema([TensorSpec(np.dtype("float32"), (-1, len(classes) or 1))]),
        # `labels: true` asks a classifier for the predicted class beside the probabilities
        params=ParamSchema([ParamSpec("labels", "boolean", False)]) if classes else None,
    )
    signature._is_signature_from_type_hint = True
    return signature


def register_version(
    run_id: str,
    *,
    model_path: Path,
    name: str,
    tags: Mapping[str, str],
    metadata: Mapping[str, Any],
    model_artifacts: Mapping[str, Path],
) -> str:
    """Log the Keras model of the open run `run_id` behind the raw-input pyfunc wrapper
    (`pipelines/registry/raw_model.py`, stored as code, nothing pickled) with `metadata` as
    the schema it checks requests against, and register it as a new version of `name`, with no
    alias: promotion is a separate, later step. Returns the version."""
    import warnings

    mlflow = _mlflow()
    schema = dict(metadata)
    with warnings.catch_warnings():
        # no input example on purpose: the golden sample is the version's example, checked
        # from a fresh process by the gate
        warnings.filterwarnings("ignore", message=".*input example was not provided.*")
        info = _log_raw_model(mlflow, model_path, schema, model_artifacts)
    version = str(mlflow.register_model(info.model_uri, name).version)
    tag_version(name, version, {**tags, "run_id": run_id})
    return version


def _log_raw_model(
    mlflow: Any, model_path: Path, schema: dict[str, Any], model_artifacts: Mapping[str, Path]
) -> Any:
    return mlflow.pyfunc.log_model(
        signature=raw_signature(schema),
        name="model",
        python_model=str(RAW_MODEL_CODE),
        artifacts={
            KERAS_ARTIFACT: str(model_path),
            **{k: str(v) for k, v in model_artifacts.items()},
        },
        model_config=schema,
        metadata=schema,
        pip_requirements=_requirements(),
    )


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
    mlflow = _mlflow()
    use_experiment(experiment)
    close_abandoned_runs(experiment)
    run = mlflow.start_run(run_name=run_name, tags={**tags, **_process_tags()})
    status = "FAILED"
    try:
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
        mlflow.log_artifacts(str(docs_dir), artifact_path="data_docs")
        status = "FINISHED" if success else "FAILED"
    finally:
        mlflow.end_run(status=status)
    return run.info.run_id


def champion_reference(names: list[str], dest: Path) -> tuple[str, dict[str, Any]] | None:
    """The training reference (`pipelines.data.drift`) of the first of `names` that has a
    champion carrying one: ("NAME version N (@champion)", profile), or None when none has.
    A store that fails to answer raises `StoreUnavailable` naming it: "no reference" is only
    ever what the store said."""
    mlflow = _mlflow()
    from mlflow.exceptions import MlflowException

    from pipelines.data.drift import REFERENCE_FILE
    from pipelines.errors import StoreUnavailable

    try:
        for name in names:
            version = alias_version(name)
            if version is None:
                continue
            info = version_info(name, version)
            listed = mlflow.MlflowClient().list_artifacts(info.run_id, REFERENCE_DIR)
            if f"{REFERENCE_DIR}/{REFERENCE_FILE}" not in {a.path for a in listed}:
                continue  # a version registered before references existed
            path = download_run_artifacts(
                info.run_id, f"{REFERENCE_DIR}/{REFERENCE_FILE}", dest / name
            )
            return f"{name} version {version} (@{CHAMPION})", json.loads(Path(path).read_text())
    except (MlflowException, OSError) as err:
        raise StoreUnavailable(
            f"the MLflow store {redacted_uri()} failed while fetching the champion's training "
            f"reference: {type(err).__name__}: {str(err)[:600]}"
        ) from err
    return None


def redacted_uri() -> str:
    """The tracking URI without any password in it, for messages."""
    import re

    return re.sub(r"//([^:/@]+):[^@/]+@", r"//\1:***@", tracking_uri())


def load_pyfunc(model_uri: str):
    """Load a logged or registered model as a generic pyfunc model."""
    return _mlflow().pyfunc.load_model(model_uri)


def alias_version(name: str, alias: str = CHAMPION) -> str | None:
    """The version behind `name@alias`, or None when there is none. Other errors (a locked
    database, an unreachable server) are raised, not mistaken for "no champion"."""
    mlflow = _mlflow()
    try:
        return str(mlflow.MlflowClient().get_model_version_by_alias(name, alias).version)
    except mlflow.exceptions.MlflowException as err:
        if err.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def set_run_tags(run_id: str, tags: Mapping[str, Any]) -> None:
    client = _mlflow().MlflowClient()
    for key, value in tags.items():
        client.set_tag(run_id, key, str(value)[:5000])


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
    """A registered version by number (`3`) or alias (`champion`); `LookupError` when the
    registry has no such version."""
    mlflow = _mlflow()
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    try:
        mv = (
            client.get_model_version(name, ref)
            if ref.isdigit()
            else client.get_model_version_by_alias(name, ref)
        )
    except MlflowException as err:
        if err.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        raise LookupError(f"{name}: the registry has no version or alias {ref!r}") from err
    return VersionInfo(
        name,
        str(mv.version),
        mv.run_id or mv.tags.get("run_id", ""),
        mv.source,
        dict(mv.tags),
        list(mv.aliases),
    )


def version_by_tag(name: str, key: str, value: str) -> VersionInfo | None:
    """The oldest version of `name` whose tag `key` is `value` (None when there is none)."""
    client = _mlflow().MlflowClient()
    found = client.search_model_versions(f"name = '{name}' and tags.{key} = '{value}'")
    if not found:
        return None
    return version_info(name, str(min(int(v.version) for v in found)))


def model_metadata(model_uri: str) -> dict[str, Any]:
    """The metadata a logged model carries (its MLmodel file only, not the model itself)."""
    return dict(_mlflow().models.get_model_info(model_uri).metadata or {})


def run_metrics(run_id: str) -> dict[str, float]:
    """The latest value of each metric of a run."""
    return dict(_mlflow().MlflowClient().get_run(run_id).data.metrics)


class ChampionMoved(RuntimeError):
    """`@champion` no longer points at the version a challenger was compared with."""


def promote(name: str, version: str, expected: str | None) -> str | None:
    """Make `version` the champion, only if `@champion` still is `expected` (the version it
    was compared with; None: there was none): compare-and-set, else `ChampionMoved`. The
    champion it replaces keeps `previous-champion`.

    Call it under `model_lock(name)`: the lock makes read-and-move one step for every
    registration that shares this store from this host. The previous-champion alias is set
    first, so a failure between the two steps leaves the old champion in place. Returns the
    replaced version, if any.
    """
    client = _mlflow().MlflowClient()
    current = alias_version(name, CHAMPION)
    if current != expected:
        raise ChampionMoved(
            f"@{CHAMPION} moved from {expected or 'none'} to {current} while version {version} "
            f"was compared with {expected or 'no champion'}; compare it again with "
            f"`pipelines promote {name} {version}`"
        )
    if current is not None and current != version:
        client.set_registered_model_alias(name, PREVIOUS_CHAMPION, current)
    client.set_registered_model_alias(name, CHAMPION, version)
    return current if current != version else None


LOCK_WAIT_S = 900.0


@contextmanager
def model_lock(name: str, wait_s: float = LOCK_WAIT_S) -> Iterator[None]:
    """Hold the registration lock of registered model `name` in this store: one registration,
    promotion or rollback of a model at a time, on this host (a file lock, `flock`, keyed by
    the tracking URI and the model, so every stage, experiment copy and CLI call that shares
    the store shares it). Processes on other machines sharing an MLflow server are not
    covered: there the compare-and-set in `promote` refuses a move whose champion changed."""
    import hashlib

    from pipelines.environment import file_lock

    uri = tracking_uri()
    key = hashlib.sha1(uri.encode()).hexdigest()[:12]
    # SQLite takes one writer at a time: with a parallel runner (threads, Dask), registrations
    # of different models would meet "database is locked", so on SQLite they all take turns.
    # An MLflow server takes parallel writes: there only one model's registrations do.
    scope = "all-models" if uri.startswith("sqlite:") else name
    model = hashlib.sha1(scope.encode()).hexdigest()[:12]
    path = Path(tempfile.gettempdir()) / "pipelines-locks" / f"{key}-{model}.lock"
    what = (
        "another registration in this SQLite store"
        if scope != name
        else f"another {name} registration"
    )
    with file_lock(path, wait_s, what):
        yield


def rollback(name: str) -> tuple[str, str]:
    """Swap `champion` and `previous-champion`; return (new champion, new previous)."""
    client = _mlflow().MlflowClient()
    with model_lock(name):
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


# Runs in a fresh interpreter that imports only mlflow and numpy, as `mlflow models serve` does.
# It loads each model and scores its input file; one process serves all the checks of a
# registration, so TensorFlow is imported once for them.
_SCORE_SCRIPT = """
import json, sys
import numpy as np
import mlflow
mlflow.set_tracking_uri(sys.argv[1])
for model_uri, inputs, output in json.loads(sys.argv[2]):
    try:
        got = mlflow.pyfunc.load_model(model_uri).predict(np.load(inputs))
        np.save(output, np.asarray(got, dtype="float64"))
    except Exception as err:
        print(json.dumps({"model": model_uri, "error": f"{type(err).__name__}: {err}"[:500]}))
assert "pipelines" not in sys.modules
"""


def score_in_fresh_process(jobs: Sequence[tuple[str, Path]]) -> list[np.ndarray | str]:
    """Load each `(model_uri, inputs.npy)` in one new Python process and predict. Returns, per
    job, the predictions (float64) or the error that stopped that model, as text."""
    with tempfile.TemporaryDirectory() as tmp:
        outputs = [Path(tmp) / f"{i}.npy" for i in range(len(jobs))]
        spec = [
            [uri, str(inputs), str(out)] for (uri, inputs), out in zip(jobs, outputs, strict=True)
        ]
        proc = subprocess.run(
            [sys.executable, "-c", _SCORE_SCRIPT, tracking_uri(), json.dumps(spec)],
            capture_output=True,
            text=True,
            timeout=600,
        )
        errors = {}
        for line in proc.stdout.splitlines():
            if line.startswith('{"model"'):
                record = json.loads(line)
                errors[record["model"]] = record["error"]
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:]
            return [errors.get(uri, f"the scoring process failed: {tail}") for uri, _ in jobs]
        return [
            np.load(out) if out.exists() else errors.get(uri, "no predictions written")
            for (uri, _), out in zip(jobs, outputs, strict=True)
        ]
