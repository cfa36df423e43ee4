"""The retraining flow: the DVC pipeline as one Prefect flow, for schedules and scale-out.

`retrain` runs the very stages of `dvc.yaml`, so a scheduled run and `dvc repro` at a desk
produce the same artifacts and both leave `dvc.lock` as the record of what was trained on what:

0. `code`, when a module changed: it rewrites each stage's code file, so that `dvc status`
   names the stages whose code changed;
1. per dataset, `ingest -> validate -> split` from the first stage `dvc status` reports changed,
   each through `dvc repro --single-item` (a validation failure stops the flow at once, with its
   report; it is never retried);
2. per model, `train -> evaluate -> register`, each model's chain independent of the others, so
   a task runner can run them in parallel (`orchestration.task_runner`: sequential, threads, or
   a Dask cluster, one model per worker). Each stage is its `dvc.yaml` command, run only when
   DVC says it (or something before it) changed; as it finishes, `dvc commit` records its
   outputs in `dvc.lock` and the cache, one commit at a time, as `dvc repro` would have;
3. `dvc push` when a DVC remote is configured (or given in `PIPELINES_DVC_REMOTE`), and a
   markdown summary of each model's test metrics and gate verdict as a Prefect artifact.

Stages are retried with back-off only for transient faults (a locked database, a busy or
unreachable server); every stage has a timeout.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.task_runners import ThreadPoolTaskRunner

from pipelines.config import OrchestrationConfig, PipelineConfig, load_config
from pipelines.console import show_messages
from pipelines.environment import executable, project_root
from pipelines.model_config import ModelRef
from pipelines.orchestration.dvc_project import (
    changed_stages,
    push_data,
    set_sources,
    stage_commands,
)
from pipelines.orchestration.retrain_summary import summary_markdown
from pipelines.orchestration.stage_code import CODE_STAGE
from pipelines.orchestration.stage_process import stage_retries, stage_task, stop_stages
from pipelines.orchestration.stage_table import stages_over

log = logging.getLogger(__name__)

DATA_STAGES = stages_over("datasets")  # ingest, validate, split
MODEL_STAGES = stages_over("models")  # train, evaluate, register
(SEARCH_STAGE,) = stages_over("search")  # tune: before train, for a model with a search


class SourceRefused(RuntimeError):
    """A retrain's new data file failed a data stage; the old source is back in params.yaml."""


def model_chain(name: str, searched: Collection[str] = ()) -> list[str]:
    """A model's stages in order: tune first when it has a search."""
    stages = (SEARCH_STAGE, *MODEL_STAGES) if name in searched else MODEL_STAGES
    return [f"{stage}@{name}" for stage in stages]


def from_first_changed(chain: list[str], changed: set[str]) -> list[str]:
    """`chain`'s stages from the first one in `changed` on (later ones read its outputs, so
    DVC cannot know yet whether they change); none when none did."""
    first = next((i for i, stage in enumerate(chain) if stage in changed), len(chain))
    return chain[first:]


def models_to_run(
    changed: set[str], names: list[str], searched: Collection[str] = ()
) -> dict[str, list[str]]:
    """Per model, its stages from the first changed one on; `searched`: the models with a
    search, whose chain starts with tune."""
    plan = {name: from_first_changed(model_chain(name, searched), changed) for name in names}
    return {name: chain for name, chain in plan.items() if chain}


def data_to_run(changed: set[str], datasets: list[str]) -> list[str]:
    """Each dataset's data stages from the first changed one on, dataset after dataset."""
    chains = ([f"{step}@{dataset}" for step in DATA_STAGES] for dataset in datasets)
    return [stage for chain in chains for stage in from_first_changed(chain, changed)]


def task_runner(kind: str, workers: int) -> Any:
    """`sequential`, `threads` (N at once) or `dask`: a local cluster of N worker processes,
    or the cluster at `PIPELINES_DASK_ADDRESS` (tcp://host:8786), whose workers must see this
    project at the same path."""
    if kind == "dask":
        from prefect_dask.task_runners import DaskTaskRunner

        address = os.environ.get("PIPELINES_DASK_ADDRESS")
        if address:
            return DaskTaskRunner(address=address)
        return DaskTaskRunner(
            cluster_kwargs={
                "n_workers": workers,
                "threads_per_worker": 1,
                "processes": True,
                "dashboard_address": None,
            }
        )
    return ThreadPoolTaskRunner(max_workers=1 if kind == "sequential" else workers)


@flow(name="train-models", log_prints=True)
def train_models(
    plan: dict[str, list[str]], commands: dict[str, str], root: str, orch: OrchestrationConfig
) -> dict[str, dict[str, Any]]:
    """Each model's chain of stages; chains run side by side as the task runner allows.
    Returns, per model, the stages that succeeded (in order) and the first error, if any.

    Cancelled or stopped (Prefect raises its termination signal here, where the flow waits),
    it stops the running stage processes first: the engine then waits for its task runner,
    which would otherwise wait for each stage to finish on its own."""
    try:
        return _run_chains(plan, commands, root, orch)
    except BaseException:
        stop_stages()
        raise


def _run_chains(
    plan: dict[str, list[str]], commands: dict[str, str], root: str, orch: OrchestrationConfig
) -> dict[str, dict[str, Any]]:
    futures: dict[str, list[tuple[str, Any]]] = {name: [] for name in plan}
    # Level by level (every train, then every evaluate...), so that with a thread pool the
    # stages waiting on a training never hold the threads another training could use.
    for level in range(max(len(chain) for chain in plan.values())):
        for name, chain in plan.items():
            if level < len(chain):
                step = chain[level]
                before = [futures[name][-1][1]] if futures[name] else []
                task = stage_task(orch, step)
                futures[name].append(
                    (
                        step,
                        task.submit(
                            step,
                            commands[step],
                            root,
                            orch.stage_timeout_s,
                            stage_retries(orch, step),
                            commit=True,
                            wait_for=before,
                        ),
                    )
                )
    outcome = {}
    for name, steps in futures.items():
        done, error = [], None
        for step, future in steps:
            try:
                future.result()
            except Exception as err:  # one model failing does not stop the others
                error = f"{step}: {err}"  # the whole message: its tail says why
                break
            done.append(step)
        outcome[name] = {"done": done, "error": error}
    return outcome


def refresh_code(root: Path, orch: OrchestrationConfig, changed: set[str]) -> set[str]:
    """Run the `code` stage when `dvc status` says a module changed; returns `dvc status` after
    it (a stage whose code changed shows only once its code file is rewritten)."""
    if CODE_STAGE not in changed:
        return changed
    log.info("code changed: rewriting each stage's code file")
    command = f"{executable('dvc')} repro --single-item {CODE_STAGE}"
    retries = stage_retries(orch, CODE_STAGE)
    stage_task(orch, CODE_STAGE)(CODE_STAGE, command, str(root), orch.stage_timeout_s, retries)
    return changed_stages(root)


def refresh_data(
    root: Path, cfg: PipelineConfig, models: list[ModelRef], changed: set[str]
) -> list[str]:
    """Ingest, validate and split each dataset the models train on, from its first stage in
    `changed` (`dvc status`) on; returns the stages that ran."""
    orch = cfg.orchestration
    datasets = list(dict.fromkeys(model.dataset for model in models))
    targets = data_to_run(changed, datasets)
    log.info(f"data stages to run: {targets or 'none, every dataset is up to date'}")
    for target in targets:
        command = f"{executable('dvc')} repro --single-item {target}"
        stage_task(orch, target)(
            target, command, str(root), orch.stage_timeout_s, stage_retries(orch, target)
        )
    return targets


def train_changed(
    root: Path,
    names: list[str],
    orch: OrchestrationConfig,
    runner: str | None,
    changed: set[str],
    searched: Collection[str] = (),
) -> tuple[dict[str, list[str]], dict[str, dict[str, Any]]]:
    """Run each model's chain from its first stage in `changed` (`dvc status`) on, on the
    task runner, and record in `dvc.lock` every stage that finished. Returns the plan (model
    -> stages) and `train_models`' outcome per model."""
    plan = models_to_run(changed, names, searched)
    log.info(f"stages to run: {plan or 'none, every model is up to date'}")
    if not plan:
        return plan, {}
    commands = stage_commands(root, [s for chain in plan.values() for s in chain])
    kind = runner or orch.task_runner
    chosen = task_runner(kind, orch.workers)
    log.info(
        f"{len(plan)} model chain(s) on {type(chosen).__name__} ({kind}, {orch.workers} at once)"
    )
    # Each stage is committed to dvc.lock as it finishes, while other chains still run, so
    # what finished is recorded even of a chain that failed later (no retraining next time).
    outcome = train_models.with_options(task_runner=chosen)(plan, commands, str(root), orch)
    return plan, outcome


@flow(name="retrain", log_prints=True)
def retrain(
    models: list[str] | None = None,
    sources: dict[str, str] | None = None,
    runner: str | None = None,
    push: bool = True,
    params: str = "params.yaml",
) -> dict[str, Any]:
    """Retrain `models` (default: every model in params.yaml), optionally on new data files
    (`sources`: dataset -> path), through the DVC stages; then push data and summarize."""
    show_messages()  # a deployment's run starts here, in a Prefect worker's process
    root = project_root()
    params_path = root / params
    cfg = load_config(params_path)
    # Unknown names fail here, naming the known ones. A new source changes datasets only, so
    # these stay the models of the config read again below.
    chosen = [cfg.model(name) for name in models or cfg.models]
    previous = {}
    original = params_path.read_text()
    if sources:
        previous = {d: cfg.datasets[d].source for d in sources if d in cfg.datasets}
        set_sources(params_path, sources)  # recorded like any params edit; see README
        cfg = load_config(params_path)
    try:
        return _retrain(root, params_path, original, cfg, chosen, previous, runner, push)
    except BaseException:
        # Cancelled (Prefect sends SIGTERM), interrupted or failed: no stage outlives the flow.
        stopped = stop_stages()
        if stopped:
            log.info(f"stopped {stopped} stage process(es) still running")
        raise


def _retrain(
    root: Path,
    params_path: Path,
    original: str,
    cfg: PipelineConfig,
    models: list[ModelRef],
    previous: dict[str, str],
    runner: str | None,
    push: bool,
) -> dict[str, Any]:
    """The flow's work: the code files, data stages (putting refused sources back), the
    models' chains on the task runner, push, summary."""
    changed = refresh_code(root, cfg.orchestration, changed_stages(root))
    try:
        if refresh_data(root, cfg, models, changed):
            changed = changed_stages(root)  # what the data stages' new outputs changed
    except Exception as err:
        if not previous:
            raise
        # Refused data leaves no trace: params.yaml is written back as it was (byte for byte)
        # and the data stages run again on the old sources (DVC's run cache restores their
        # outputs and their dvc.lock entries).
        params_path.write_text(original)
        refresh_data(root, load_config(params_path), models, changed_stages(root))
        restored = ", ".join(f"datasets.{d}.source: {s}" for d, s in previous.items())
        raise SourceRefused(
            f"the new data was refused, so params.yaml is back to {restored} (and the data "
            f"stages to its files); nothing was trained or registered. {err}"
        ) from err
    names = [model.name for model in models]
    plan, outcome = train_changed(root, names, cfg.orchestration, runner, changed, set(cfg.search))
    chains = {stage for name in names for stage in model_chain(name, set(cfg.search))}
    left = sorted(changed_stages(root) & chains)
    pushed = push_data(root) if push else "push skipped"
    log.info(pushed)
    create_markdown_artifact(
        key="retrain-summary",
        markdown="# Retraining summary\n\n" + summary_markdown(root, cfg, models, outcome),
        description="Test metrics and gate verdict per model",
    )
    failed = {n: o["error"] for n, o in outcome.items() if o["error"]}
    if failed:
        raise RuntimeError(f"models failed: {failed}")
    if left:
        raise RuntimeError(f"DVC still reports changed stages after the run: {left}")
    return {"ran": plan, "outcome": outcome, "push": pushed}
