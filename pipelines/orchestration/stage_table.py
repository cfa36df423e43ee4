"""Every stage of the pipeline, once: its name in `dvc.yaml`, what it loops over, the step
function it runs, the modules that step runs (from which the `code` stage writes its code file,
`orchestration/stage_code.py`), and its Prefect task options. The Prefect flows
(`orchestration/flows.py`), the retraining flow's plan (`orchestration/retrain.py`), `make deps`
and the layout test read it; a test checks it against `dvc.yaml` (whose `code` stage comes
first, and is not in the table: it is bookkeeping, not a step of the pipeline)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Stage:
    name: str  # the stage in dvc.yaml (a foreach stage: `name@key`)
    loops_over: str  # the params.yaml section its foreach reads: datasets, search or models
    step: str  # "module:function", the step function it runs
    modules: tuple[str, ...]  # the modules the step runs, with what they import
    task: dict[str, Any] = field(default_factory=dict)  # Prefect task options
    flow_name: str | None = None  # its Prefect flow's name, if not `name`

    def step_function(self) -> Callable[..., Any]:
        module, _, function = self.step.partition(":")
        fn: Callable[..., Any] = getattr(importlib.import_module(module), function)
        return fn


STAGES: tuple[Stage, ...] = (
    Stage(
        "ingest",
        "datasets",
        "pipelines.data.datasets:ingest",
        ("pipelines.data.datasets",),
        {"name": "ingest", "retries": 1, "retry_delay_seconds": 2},
    ),
    Stage(
        "validate",
        "datasets",
        "pipelines.data.validation:check_dataset",
        ("pipelines.data.validation", "pipelines.registry.tracking.run_lifecycle"),
        {"name": "validate"},
    ),
    Stage(
        "split",
        "datasets",
        "pipelines.data.preprocessing:split_and_fit",
        ("pipelines.data.preprocessing",),
        {"name": "split-normalize"},
        flow_name="split-normalize",
    ),
    Stage(
        "tune",
        "search",
        "pipelines.orchestration.tuning:tune",
        ("pipelines.orchestration.tuning",),
        {"name": "search"},
    ),
    Stage(
        "train",
        "models",
        "pipelines.model.training:train_model",
        ("pipelines.model.training", "pipelines.registry.runs"),
        {"name": "train"},
    ),
    Stage(
        "evaluate",
        "models",
        "pipelines.model.evaluation:evaluate_saved_outputs",
        ("pipelines.model.evaluation", "pipelines.registry.runs"),
        {"name": "evaluate"},
    ),
    # Not retried: a retry after a partial failure could register a second version.
    Stage(
        "register",
        "models",
        "pipelines.registry.registration:register_model",
        ("pipelines.registry.registration",),
        {"name": "register"},
    ),
)


def stages_over(section: str) -> tuple[str, ...]:
    """The names of the stages that loop over `section`, in pipeline order."""
    return tuple(stage.name for stage in STAGES if stage.loops_over == section)
