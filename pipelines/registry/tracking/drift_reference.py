"""The champion's training reference, which drift is measured against."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipelines.registry.tracking.aliases import CHAMPION, alias_version
from pipelines.registry.tracking.connection import connect, redacted_uri
from pipelines.registry.tracking.model_versions import version_info
from pipelines.registry.tracking.run_logging import REFERENCE_DIR, download_run_artifacts


def champion_reference(names: list[str], dest: Path) -> tuple[str, dict[str, Any]] | None:
    """The training reference (`pipelines.data.drift`) of the first of `names` that has a
    champion carrying one: ("NAME version N (@champion)", profile), or None when none has.
    A store that fails to answer raises `StoreUnavailable` naming it: "no reference" is only
    ever what the store said."""
    mlflow = connect()
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
