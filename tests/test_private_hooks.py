"""Every private or internal third-party API the pipeline relies on, in one list: where it is
used, what for, and what breaks without it. Each has a check that fails with a message naming
the hook when an upgrade removes or changes it, instead of a guard in the code that would skip
it silently."""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class Hook:
    name: str
    used_in: str
    what_for: str
    breaks_without: str


def _source_mentions(module: str, text: str) -> bool:
    return text in Path(importlib.import_module(module).__file__).read_text()


def _mlflow_signature_flag() -> bool:
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    signature = ModelSignature(inputs=Schema([TensorSpec(np.dtype("float64"), (-1, 2))]))
    return hasattr(signature, "_is_signature_from_type_hint") and _source_mentions(
        "mlflow.pyfunc", "_is_signature_from_type_hint"
    )


def _mlflow_skip_type_hints() -> bool:
    return _source_mentions("mlflow.pyfunc.model", "_skip_type_hint_validation")


def _mlflow_requirements_map() -> bool:
    from mlflow.utils import requirements_utils

    return callable(requirements_utils._init_packages_to_modules_map) and _source_mentions(
        "mlflow.utils.requirements_utils", "_init_packages_to_modules_map()"
    )


def _keras_python_random() -> bool:
    from keras.src.random import seed_generator

    return hasattr(seed_generator, "python_random") and _source_mentions(
        "keras.src.random.seed_generator", "python_random.randint"
    )


def _gx_expectation_configuration() -> bool:
    from great_expectations.expectations.expectation_configuration import (
        ExpectationConfiguration,
    )

    return {"type", "kwargs", "meta"} <= set(inspect.signature(ExpectationConfiguration).parameters)


def _gx_progress_bars() -> bool:
    from great_expectations.data_context.types.base import ProgressBarsConfig

    return "globally" in inspect.signature(ProgressBarsConfig).parameters


def _dvc_modify_yaml() -> bool:
    from dvc.utils.serialize import modify_yaml

    return callable(modify_yaml)


def _dvc_persist_skips_run_cache() -> bool:
    from dvc.stage import cache

    source = inspect.getsource(cache)
    return "def _can_hash" in source and "out.persist" in source


def _dvc_repo_stage_collect() -> bool:
    from dvc.repo.stage import StageLoad

    return "target" in inspect.signature(StageLoad.collect).parameters


def _dvc_config_edit() -> bool:
    from dvc.config import Config

    return "level" in inspect.signature(Config.edit).parameters


def _mlflow_parent_run_tag() -> bool:
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    return MLFLOW_PARENT_RUN_ID == "mlflow.parentRunId"


def _mlflow_dataset_source() -> bool:
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    return callable(resolve_dataset_source) and callable(MetaDataset)


def _prefect_console_handler() -> bool:
    from prefect.logging.handlers import PrefectConsoleHandler

    return callable(PrefectConsoleHandler.filter)


HOOKS = {
    Hook(
        "mlflow ModelSignature._is_signature_from_type_hint",
        "pipelines/registry/tracking/model_versions.py (raw_signature)",
        "MLflow leaves request validation to the raw-input wrapper, as for a signature from "
        "type hints",
        "MLflow enforces the tensor schema itself: requests as rows, named columns in any "
        "order or whole numbers are refused or silently reordered",
    ): _mlflow_signature_flag,
    Hook(
        "mlflow PythonModel._skip_type_hint_validation",
        "pipelines/registry/raw_model.py (RawInputModel)",
        "no schema derived from `predict`'s (absent) type hints",
        "MLflow warns in every process that loads a version, and may derive a schema",
    ): _mlflow_skip_type_hints,
    Hook(
        "keras.src.random.seed_generator.python_random",
        "pipelines/model/training.py (seed_everything)",
        "Keras draws unseeded layers' seeds from a generator of its own, seeded per fit",
        "a thread drawing from `random` (Prefect's keepalive) changes initial weights: the "
        "same seed no longer gives the same metrics; seed_everything raises",
    ): _keras_python_random,
    Hook(
        "great_expectations.expectations.expectation_configuration.ExpectationConfiguration",
        "pipelines/data/validation.py (_build_suite)",
        "a suite built from the JSON file's expectations",
        "validation cannot build its suite",
    ): _gx_expectation_configuration,
    Hook(
        "great_expectations.data_context.types.base.ProgressBarsConfig",
        "pipelines/data/validation.py (validate_parts)",
        "no GX progress bars in stage logs",
        "validation fails to start its context",
    ): _gx_progress_bars,
    Hook(
        "dvc.utils.serialize.modify_yaml",
        "pipelines/orchestration/dvc_project.py (set_sources)",
        "edit params.yaml in place with its comments kept",
        "`pipelines retrain --source` cannot point a dataset at a new file",
    ): _dvc_modify_yaml,
    Hook(
        "dvc.stage.cache._can_hash (persist outputs skip the run cache)",
        "dvc.yaml (register: registration.json persist: true)",
        "register always runs, never restored from DVC's run cache",
        "a reverted model is restored with a stale registration.json and never judged",
    ): _dvc_persist_skips_run_cache,
    Hook(
        "dvc.repo.Repo.stage.collect",
        "pipelines/orchestration/dvc_project.py (stage_commands)",
        "each stage's resolved command, as dvc.yaml defines it",
        "the retrain flow cannot run stages",
    ): _dvc_repo_stage_collect,
    Hook(
        "dvc.config.Config.edit (repo.config.edit('local'))",
        "pipelines/orchestration/dvc_project.py (_use_remote)",
        "the DVC remote from PIPELINES_DVC_REMOTE, written to .dvc/config.local without a "
        "command line that would show its password",
        "the retrain flow cannot set up its remote, and data is not pushed",
    ): _dvc_config_edit,
    Hook(
        "mlflow.utils.mlflow_tags.MLFLOW_PARENT_RUN_ID",
        "pipelines/registry/tracking/nested_runs.py (start_child_run)",
        "a search's trials fold under their parent in the MLflow UI",
        "trials show as a flat list of runs",
    ): _mlflow_parent_run_tag,
    Hook(
        "mlflow.data.dataset_source_registry / mlflow.data.meta_dataset",
        "pipelines/registry/tracking/run_logging.py (log_inputs)",
        "the runs list's Dataset column, with DVC's md5 as digest",
        "training runs fail to log their inputs",
    ): _mlflow_dataset_source,
    Hook(
        "mlflow.utils.requirements_utils._init_packages_to_modules_map",
        "pipelines/registry/tracking/fresh_process.py (the scorer script's head start)",
        "a scorer started ahead builds the installed-packages map that MLflow checks a model's "
        "requirements against before its first load (about 0.8 s)",
        "nothing breaks (the call is guarded): the first load pays those 0.8 s again",
    ): _mlflow_requirements_map,
    Hook(
        "prefect.logging.handlers.PrefectConsoleHandler",
        "pipelines/orchestration/prefect_server.py (quiet_known_failures)",
        "known failures print one line, without Prefect's traceback after it",
        "a known failure prints a traceback",
    ): _prefect_console_handler,
}


@pytest.mark.parametrize("hook", list(HOOKS), ids=lambda h: h.name)
def test_the_private_hook_is_still_there(hook):
    try:
        ok = HOOKS[hook]()
    except (ImportError, AttributeError, TypeError, ValueError, OSError) as err:
        pytest.fail(
            f"{hook.name} is gone ({type(err).__name__}: {err}); used in "
            f"{hook.used_in} for: {hook.what_for}. Without it: {hook.breaks_without}"
        )
    assert ok, (
        f"{hook.name} changed; used in {hook.used_in} for: {hook.what_for}. "
        f"Without it: {hook.breaks_without}"
    )


def test_the_list_covers_every_private_import_in_the_code(repo_root):
    """A new `keras.src`, GX `types`, `dvc.utils`/`dvc.stage` or `mlflow.utils` import must
    join the list above."""
    listed = " ".join(h.name for h in HOOKS)
    risky = ("keras.src", "great_expectations.data_context.types", "dvc.utils", "mlflow.utils")
    for path in (repo_root / "pipelines").rglob("*.py"):
        for line in path.read_text().splitlines():
            words = line.split()
            if len(words) >= 2 and words[0] in ("from", "import"):
                module = words[1]
                if module.startswith(risky):
                    assert module in listed, f"{path}: {module} is not in the private hooks list"
