"""Registered versions: logging the Keras model behind the raw-input pyfunc wrapper, its
signature, registering it, reading and tagging versions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipelines.registry.tracking.connection import connect

if TYPE_CHECKING:
    from mlflow.models import ModelSignature

RAW_MODEL_CODE = Path(__file__).parent.parent / "raw_model.py"


# The Keras model's artifact name inside each version; raw_model.py (which must not import this
# package) spells the same name, and a test keeps the two equal.
KERAS_ARTIFACT = "keras_model"


def _requirements() -> list[str]:
    """Pinned requirements of the served model, without importing TensorFlow to infer them."""
    from pipelines.registry.lineage import installed_versions

    return [f"{name}=={version}" for name, version in installed_versions().items()]


def raw_signature(metadata: Mapping[str, Any]) -> ModelSignature:
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
        params=ParamSchema([ParamSpec("labels", "boolean", False)]) if classes else None,  # type: ignore[arg-type]
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

    mlflow = connect()
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
    mlflow = connect()
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
    client = connect().MlflowClient()
    found = client.search_model_versions(f"name = '{name}' and tags.{key} = '{value}'")
    if not found:
        return None
    return version_info(name, str(min(int(v.version) for v in found)))


def model_metadata(model_uri: str) -> dict[str, Any]:
    """The metadata a logged model carries (its MLmodel file only, not the model itself)."""
    return dict(connect().models.get_model_info(model_uri).metadata or {})


def load_pyfunc(model_uri: str) -> Any:
    """Load a logged or registered model as a generic pyfunc model."""
    return connect().pyfunc.load_model(model_uri)


def tag_version(name: str, version: str, tags: Mapping[str, Any]) -> None:
    client = connect().MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, str(value)[:5000])


def tag_incomplete(client: Any, versions: Sequence[Any], why: str) -> list[str]:
    """Tag each of `versions` that has no gate verdict as incomplete; returns those tagged."""
    tagged = []
    for mv in versions:
        if "gate" not in mv.tags:
            client.set_model_version_tag(mv.name, mv.version, "gate", f"incomplete: {why}")
            tagged.append(str(mv.version))
    return tagged


def _run_status(client: Any, run_id: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        status: str = client.get_run(run_id).info.status
        return status
    except MlflowException as err:
        if err.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        return None


def mark_incomplete_versions(name: str) -> list[str]:
    """Tag versions of `name` that never got a gate verdict (their registration stopped
    half-way) as incomplete, so nobody mistakes them for checked ones. A version whose run is
    still RUNNING is a registration in flight (its process alive: `close_abandoned_runs`
    closes the others first) and is left alone. They never hold an alias: promotion is the
    last step. Returns the versions tagged."""
    mlflow = connect()
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
    return tag_incomplete(client, settled, "registration stopped before the gate")
