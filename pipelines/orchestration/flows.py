"""Thin Prefect flows and tasks over the plain stages (`pipelines.orchestration.stages`).

Each DVC stage runs one of these flows through the CLI. Flows take strings (paths, names) so
their parameters show up readably in the Prefect UI; the stage body is shared with the
Prefect-free path, only each step becomes a Prefect task. Import this module only after
`prefect_server.ensure_api()`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from pipelines.errors import KnownFailure
from pipelines.orchestration import stages
from pipelines.orchestration.stage_table import STAGES, Stage


def _retry_step(task: Any, task_run: Any, state: Any) -> bool:
    """A step in this process: retry any fault but a known failure (bad data, bad params),
    which fails the same way every time. `stage_process._retry_stage` is the same rule for a stage
    in a child process, which can only be judged by its output."""
    try:
        state.result()
    except KnownFailure:
        return False
    except Exception:
        return True
    return False


# The step functions a stage may run, with their Prefect task options (the stage table's).
@cache
def _options() -> dict[Callable[..., Any], dict[str, Any]]:
    return {stage.step_function(): stage.task for stage in STAGES}


@cache
def as_task(fn: Callable[..., Any]) -> Any:
    """`fn` as a Prefect task, built on first use (nothing is built at import time)."""
    options: dict[str, Any] = {"cache_policy": NO_CACHE, "retry_condition_fn": _retry_step}
    return task(fn, **options, **_options()[fn])


def _flow_of(stage: Stage) -> Any:
    """The stage's plain function (`stages.<name>`) as a Prefect flow whose steps are tasks:
    its parameters are the function's own, but `step`, and each run is named after what it
    loops over (`train-tabular-dnn`, `split-digits`)."""
    body = getattr(stages, stage.name)

    def run(*args: Any, **kwargs: Any) -> Any:
        return body(*args, **kwargs, step=as_task)

    signature = inspect.signature(body, eval_str=True)
    run.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[p for p in signature.parameters.values() if p.name != "step"]
    )
    run.__name__ = run.__qualname__ = f"{stage.name}_flow"
    run.__doc__ = body.__doc__
    key = "dataset" if stage.loops_over == "datasets" else "model_name"
    return flow(
        name=stage.flow_name or stage.name,
        flow_run_name=f"{stage.name}-{{{key}}}",
        log_prints=True,
    )(run)


@cache
def stage_flow(name: str) -> Any:
    """The Prefect flow of stage `name` (ingest, validate, split, tune, train, evaluate,
    register), built on first use from the stage table."""
    (stage,) = [s for s in STAGES if s.name == name]
    return _flow_of(stage)


@contextmanager
def stage_settings() -> Iterator[None]:
    """Prefect's settings for one stage's flow: no flow-run heartbeat, unless the user asks for
    one (`PREFECT_FLOWS_HEARTBEAT_FREQUENCY`, in the environment or a Prefect profile).

    The heartbeat thread sleeps in whole seconds and the flow's end waits for it: up to 1 s
    (0.31 s, the median of 10 alternated runs of a stage) added to every stage process, 31 of
    them in a full `dvc repro`. A stage's flow lives exactly as long as its DVC stage process,
    which DVC (and `stage_process.supervised_stage`) already watch; Prefect needs heartbeats
    only for an automation that marks silent runs as crashed.

    What `temporary_settings(set_defaults=...)` does, without its second validation of every
    setting (about 0.025 s a stage): the heartbeat counts as set by the user when any of
    Prefect's sources (environment, profile, `prefect.toml`) gave it."""
    from prefect.context import SettingsContext

    context = SettingsContext.get()
    assert context is not None  # Prefect's import enters its root settings context
    settings = context.settings
    if "heartbeat_frequency" not in settings.flows.model_fields_set:
        flows = settings.flows.model_copy(update={"heartbeat_frequency": None})
        settings = settings.model_copy(update={"flows": flows})
    with SettingsContext(profile=context.profile, settings=settings):
        yield


def run_stage_flow(name: str, **kwargs: Any) -> Any:
    """Run stage `name` as its Prefect flow, under `stage_settings`."""
    with stage_settings():
        return stage_flow(name)(**kwargs)
