"""The retraining flow: the DVC pipeline as one Prefect flow, for schedules and scale-out.

`retrain` runs the very stages of `dvc.yaml`, so a scheduled run and `dvc repro` at a desk
produce the same artifacts and both leave `dvc.lock` as the record of what was trained on what:

1. per dataset, `ingest -> validate -> split` through `dvc repro --single-item` (a validation
   failure stops the flow at once, with its report; it is never retried);
2. per model, `train -> evaluate -> register`, each model's chain independent of the others, so
   a task runner can run them in parallel (`orchestration.task_runner`: sequential, threads, or
   a Dask cluster, one model per worker). Each stage is its `dvc.yaml` command, run only when
   DVC says it (or something before it) changed; afterwards `dvc commit` records the outputs in
   `dvc.lock` and the cache, one at a time, as `dvc repro` would have;
3. `dvc push` when a DVC remote is configured (or given in `PIPELINES_DVC_REMOTE`), and a
   markdown summary of each model's test metrics and gate verdict as a Prefect artifact.

Stages are retried with back-off only for transient faults (a locked database, a busy or
unreachable server); every stage has a timeout.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from collections import deque
from collections.abc import Collection
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from pipelines.config import OrchestrationConfig, PipelineConfig, load_config
from pipelines.environment import env_with_venv, executable, project_root
from pipelines.run.stage_table import stages_over

DATA_STAGES = stages_over("datasets")  # ingest, validate, split
MODEL_STAGES = stages_over("models")  # train, evaluate, register
(SEARCH_STAGE,) = stages_over("search")  # tune: before train, for a model with a search
REMOTE_ENV = "PIPELINES_DVC_REMOTE"
TRANSIENT = (
    "database is locked",
    "Connection refused",
    "Connection reset",
    "Temporary failure in name resolution",
    "Max retries exceeded",
    "TEMPORARILY_UNAVAILABLE",
    "503 Service Unavailable",
    "Unable to acquire lock",
)


class StageFailed(RuntimeError):
    """A stage command exited non-zero; `transient` says whether a retry may help."""

    def __init__(self, stage: str, code: int, tail: str, retries: int = 0):
        self.stage, self.code, self.tail, self.retries = stage, code, tail, retries
        self.transient = any(marker in tail for marker in TRANSIENT)
        if not self.transient:
            kind = "not a transient fault: not retried"
        elif retries:
            kind = f"transient fault: retried up to {retries} time(s)"
        else:
            kind = "transient fault, but this stage is never retried"
        how = "timed out" if code == -1 else f"exited with {code}"
        super().__init__(f"stage {stage} {how} ({kind}):\n{tail}")

    def __reduce__(self) -> tuple:  # travels between Dask processes
        return (StageFailed, (self.stage, self.code, self.tail, self.retries))


def dvc(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [executable("dvc"), *args], cwd=root, capture_output=True, text=True, check=False
    )
    if check and proc.returncode != 0:
        raise RuntimeError(f"dvc {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def changed_stages(root: Path) -> set[str]:
    """Stages whose deps, params or outputs differ from `dvc.lock` (`dvc status`)."""
    status = json.loads(dvc(root, "status", "--json").stdout or "{}")
    return {name.split(":")[-1] for name in status}


def stage_commands(root: Path, names: list[str]) -> dict[str, str]:
    """The resolved `cmd` of each named stage, as `dvc.yaml` defines it."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        return {name: repo.stage.collect(name)[0].cmd for name in names}


class SourceRefused(RuntimeError):
    """A retrain's new data file failed a data stage; the old source is back in params.yaml."""


def set_sources(params_path: Path, sources: dict[str, str]) -> None:
    """Point datasets at new files, editing `params.yaml` in place (comments kept), so that
    DVC sees the change and `dvc.lock` records it."""
    from dvc.utils.serialize import modify_yaml

    with modify_yaml(str(params_path)) as data:
        for dataset, source in sources.items():
            if dataset not in data["datasets"]:
                raise KeyError(f"datasets.{dataset}: no such dataset")
            data["datasets"][dataset]["source"] = source


def model_chain(name: str, searched: Collection[str] = ()) -> list[str]:
    """A model's stages in order: tune first when it has a search."""
    stages = (SEARCH_STAGE, *MODEL_STAGES) if name in searched else MODEL_STAGES
    return [f"{stage}@{name}" for stage in stages]


def models_to_run(
    changed: set[str], names: list[str], searched: Collection[str] = ()
) -> dict[str, list[str]]:
    """Per model, its stages from the first changed one on (later ones read its outputs);
    `searched`: the models with a search, whose chain starts with tune."""
    plan = {}
    for name in names:
        chain = model_chain(name, searched)
        first = next((i for i, stage in enumerate(chain) if stage in changed), None)
        if first is not None:
            plan[name] = chain[first:]
    return plan


def _retry_stage(task: Any, task_run: Any, state: Any) -> bool:
    """A stage in a child process: retry only a failure whose output names a fault that may
    pass (`TRANSIENT`: a locked database, a busy server). `flows._retry_step` is the same rule
    for a step in this process."""
    try:
        state.result()
    except StageFailed as err:
        return err.transient
    except Exception:
        return False
    return False


@task(name="stage", task_run_name="{stage}", cache_policy=NO_CACHE, retry_condition_fn=_retry_stage)
def run_stage(
    stage: str, command: str, root: str, timeout_s: float = 3600, retries: int = 0
) -> str:
    """Run one stage command in the project, streaming its output to the Prefect log. The
    command is stopped (its whole process group) on timeout or on any other way out."""
    logger = get_run_logger()
    logger.info("%s: %s", stage, command)
    proc = subprocess.Popen(
        command,
        shell=True,
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env_with_venv(),
        start_new_session=True,
    )
    with _LIVE_LOCK:
        _LIVE.add(proc)
    tail: deque[str] = deque(maxlen=40)

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            tail.append(line.rstrip())
            logger.info("%s | %s", stage, line.rstrip())

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        code = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        code = None
    finally:
        _stop(proc)
        with _LIVE_LOCK:
            _LIVE.discard(proc)
    reader.join(timeout=10)
    if code is None:
        raise StageFailed(
            stage, -1, f"timed out after {timeout_s:.0f} s\n" + "\n".join(tail), retries
        )
    if code != 0:
        raise StageFailed(stage, code, "\n".join(tail), retries)
    return stage


# The stage processes running now. Each runs in its own session (so that a timeout stops its
# whole group) and so outlives the flow unless the flow stops it: a cancelled or killed flow
# stops them all (`stop_stages`) before it exits, so that none goes on to register a model.
_LIVE: set[subprocess.Popen] = set()
_LIVE_LOCK = threading.Lock()


def stop_stages() -> int:
    """Stop every stage process still running (their whole groups); returns how many."""
    with _LIVE_LOCK:
        running = [proc for proc in _LIVE if proc.poll() is None]
    for proc in running:
        _stop(proc)
    return len(running)


def _stop(proc: subprocess.Popen) -> None:
    """Terminate a stage's process group if it is still running (timeout, cancellation)."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue
        except ProcessLookupError:
            return


def stage_retries(orch: OrchestrationConfig, stage: str) -> int:
    # A register stage is never retried: a retry after a partial failure could register a
    # second version (the first is tagged incomplete by the next registration).
    return 0 if stage.startswith("register@") else orch.retries


def _stage_task(orch: OrchestrationConfig, stage: str) -> Any:
    return run_stage.with_options(
        retries=stage_retries(orch, stage), retry_delay_seconds=orch.retry_delay_seconds
    )


def task_runner(kind: str, workers: int) -> Any:
    """`sequential`, `threads` (N at once) or `dask`: a local cluster of N worker processes,
    or the cluster at `PIPELINES_DASK_ADDRESS` (tcp://host:8786), whose workers must see this
    project at the same path."""
    if kind == "dask":
        from prefect_dask import DaskTaskRunner

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
) -> dict:
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
) -> dict:
    futures: dict[str, list[tuple[str, Any]]] = {name: [] for name in plan}
    # Level by level (every train, then every evaluate...), so that with a thread pool the
    # stages waiting on a training never hold the threads another training could use.
    for level in range(max(len(chain) for chain in plan.values())):
        for name, chain in plan.items():
            if level < len(chain):
                step = chain[level]
                before = [futures[name][-1][1]] if futures[name] else []
                task = _stage_task(orch, step)
                futures[name].append(
                    (
                        step,
                        task.submit(
                            step,
                            commands[step],
                            root,
                            orch.stage_timeout_s,
                            stage_retries(orch, step),
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


def summary_markdown(root: Path, cfg: PipelineConfig, names: list[str], outcome: dict) -> str:
    """A table of each model's test metrics and gate verdict, what this run did, and the
    registry's live `@champion` beside it. For a model this run did not retrain, the verdict
    is the last registration's (its `registration.json`, the registry's account of it), and
    says so: only the live alias tells who is champion now."""
    from pipelines.model.evaluation import METRICS_FILE
    from pipelines.registry.registration import REGISTRATION_FILE
    from pipelines.registry.tracking import aliases

    rows = [
        "| model | family | test metrics | version | gate | this run | @champion now |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in names:
        result = outcome.get(name)
        live = aliases.alias_version(name) or "none"
        if result and result["error"]:
            failure = result["error"].splitlines()[0].replace("|", "/")
            rows.append(
                f"| {name} | {cfg.entry(name).family} | - | - | - | FAILED {failure} | {live} |"
            )
            continue
        metrics_file = root / cfg.paths.reports / name / METRICS_FILE
        registration_file = root / cfg.paths.models / name / REGISTRATION_FILE
        metrics = json.loads(metrics_file.read_text())["test"] if metrics_file.exists() else {}
        shown = ", ".join(f"{k} {v:.4g}" for k, v in list(metrics.items())[:4]) or "-"
        reg = json.loads(registration_file.read_text()) if registration_file.exists() else {}
        gate = _gate_summary(reg, live)
        if not result:
            gate = f"last registration: {gate}"
        rows.append(
            f"| {name} | {cfg.entry(name).family} | {shown} | {reg.get('version', '-')} | "
            f"{gate} | {'retrained' if result else 'up to date'} | {live} |"
        )
    errors = [
        f"### {name}\n\n```\n{result['error']}\n```"
        for name, result in outcome.items()
        if result.get("error")
    ]
    return "\n".join(rows) + ("\n\n## Failures\n\n" + "\n\n".join(errors) if errors else "")


def _gate_summary(reg: dict, live: str) -> str:
    """One cell: the gate's verdict on the version and where it stands in the registry now."""
    if not reg:
        return "-"
    if str(reg.get("version")) == live:
        return "@champion"
    if reg.get("gate") == "passed":
        return "passed, not @champion: " + (reg.get("not_promoted_because") or "")[:200]
    return "not promoted: " + "; ".join(reg.get("gate_failures", []))[:200]


def _use_remote(root: Path, url: str) -> None:
    """Make `url` the default DVC remote in `.dvc/config.local` (never committed), written
    through DVC's config API: on a `dvc remote add` command line, a password in the URL would
    show in any local user's process list."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo, repo.config.edit("local") as conf:
        conf["remote"]["pipelines-remote"] = {"url": url}
        conf["core"]["remote"] = "pipelines-remote"


def push_data(root: Path) -> str:
    """`dvc push` to the remote in `PIPELINES_DVC_REMOTE` (set up in `.dvc/config.local`, never
    committed) or to the configured default remote; nothing when there is none."""
    url = os.environ.get(REMOTE_ENV)
    if url:
        _use_remote(root, url)
    if not dvc(root, "remote", "list").stdout.strip():
        return "no DVC remote configured: nothing pushed"
    return (dvc(root, "push").stdout.strip().splitlines() or ["pushed"])[-1]


def refresh_data(root: Path, cfg: PipelineConfig, names: list[str]) -> None:
    """Ingest, validate and split each dataset the models train on (each a no-op when DVC
    finds it up to date)."""
    orch = cfg.orchestration
    for dataset in dict.fromkeys(cfg.entry(n).dataset for n in names):
        for step in DATA_STAGES:
            target = f"{step}@{dataset}"
            command = f"{executable('dvc')} repro --single-item {target}"
            _stage_task(orch, target)(
                target, command, str(root), orch.stage_timeout_s, stage_retries(orch, target)
            )


def train_changed(
    root: Path,
    names: list[str],
    orch: OrchestrationConfig,
    runner: str | None,
    searched: Collection[str] = (),
) -> tuple[dict[str, list[str]], dict]:
    """Run each model's chain from its first changed stage on the task runner, and record in
    `dvc.lock` every stage that finished. Returns the plan (model -> stages) and
    `train_models`' outcome per model."""
    plan = models_to_run(changed_stages(root), names, searched)
    print(f"stages to run: {plan or 'none, every model is up to date'}")
    if not plan:
        return plan, {}
    commands = stage_commands(root, [s for chain in plan.values() for s in chain])
    kind = runner or orch.task_runner
    outcome = train_models.with_options(task_runner=task_runner(kind, orch.workers))(
        plan, commands, str(root), orch
    )
    # Record what finished, even of a chain that failed later (no retraining next time).
    done = [step for result in outcome.values() for step in result["done"]]
    if done:
        dvc(root, "commit", "--force", *done)
    return plan, outcome


@flow(name="retrain", log_prints=True)
def retrain(
    models: list[str] | None = None,
    sources: dict[str, str] | None = None,
    runner: str | None = None,
    push: bool = True,
    params: str = "params.yaml",
) -> dict:
    """Retrain `models` (default: every model in params.yaml), optionally on new data files
    (`sources`: dataset -> path), through the DVC stages; then push data and summarize."""
    root = project_root()
    params_path = root / params
    cfg = load_config(params_path)
    names = list(models or cfg.models)
    for name in names:
        cfg.entry(name)  # unknown names fail here, naming the known ones
    previous = {}
    if sources:
        previous = {d: cfg.datasets[d].source for d in sources if d in cfg.datasets}
        set_sources(params_path, sources)  # recorded like any params edit; see README
        cfg = load_config(params_path)
    try:
        return _retrain(root, params_path, cfg, names, previous, runner, push)
    except BaseException:
        # Cancelled (Prefect sends SIGTERM), interrupted or failed: no stage outlives the flow.
        stopped = stop_stages()
        if stopped:
            print(f"stopped {stopped} stage process(es) still running")
        raise


def _retrain(
    root: Path,
    params_path: Path,
    cfg: PipelineConfig,
    names: list[str],
    previous: dict[str, str],
    runner: str | None,
    push: bool,
) -> dict:
    """The flow's work: data stages (putting refused sources back), the models' chains on
    the task runner, push, summary."""
    try:
        refresh_data(root, cfg, names)
    except Exception as err:
        if not previous:
            raise
        # Refused data leaves no trace: the old sources go back into params.yaml and the
        # data stages run again on them (DVC's run cache restores their outputs and lock).
        set_sources(params_path, previous)
        refresh_data(root, load_config(params_path), names)
        restored = ", ".join(f"datasets.{d}.source: {s}" for d, s in previous.items())
        raise SourceRefused(
            f"the new data was refused, so params.yaml is back to {restored} (and the data "
            f"stages to its files); nothing was trained or registered. {err}"
        ) from err
    plan, outcome = train_changed(root, names, cfg.orchestration, runner, set(cfg.search))
    chains = {stage for name in names for stage in model_chain(name, set(cfg.search))}
    left = sorted(changed_stages(root) & chains)
    pushed = push_data(root) if push else "push skipped"
    print(pushed)
    create_markdown_artifact(
        key="retrain-summary",
        markdown="# Retraining summary\n\n" + summary_markdown(root, cfg, names, outcome),
        description="Test metrics and gate verdict per model",
    )
    failed = {n: o["error"] for n, o in outcome.items() if o["error"]}
    if failed:
        raise RuntimeError(f"models failed: {failed}")
    if left:
        raise RuntimeError(f"DVC still reports changed stages after the run: {left}")
    return {"ran": plan, "outcome": outcome, "push": pushed}
