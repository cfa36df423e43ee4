"""The `tune` stage: a model's hyperparameter search, every trial in this process (or on Dask
workers), one parent MLflow run with a nested run per trial, and `search.json` for `train`.

Trials cost what a fit costs: the data is read once, nothing is imported again, and no stage
process starts per trial. In one process the TPE sampler is seeded, so the same seed gives
the same trials and the same best params. With `search.workers` above 1, trials run that many
at a time on Dask workers that share the study through Optuna's Dask storage: a local cluster,
or the one at `PIPELINES_DASK_ADDRESS` (the retraining flow's cluster setting).
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.config import PipelineConfig
from pipelines.console import show_messages
from pipelines.errors import KnownFailure
from pipelines.model import search as optimizer
from pipelines.model.training import TrainingData
from pipelines.model_config import ModelRef
from pipelines.registry import runs
from pipelines.registry.tracking import connection, run_logging

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    import optuna

TRIALS_FILE = "trials.csv"
DASK_ENV = "PIPELINES_DASK_ADDRESS"
# optuna-integration marks its Dask storage experimental on every use; the version is pinned.
DASK_STORAGE_NOTE = "DaskStorage is experimental"


class SearchFailed(KnownFailure, RuntimeError):
    """No trial of a search completed."""


class _TrialFailed(Exception):
    """A trial whose fit failed: Optuna records it FAIL and the search goes on."""


@dataclass(frozen=True)
class SearchSummary:
    model: str
    metric: str
    direction: str
    best_value: float
    best_trial: int
    best_params: dict[str, Any]
    trials: int
    states: dict[str, int]
    parent_run_id: str
    parent_run_name: str
    seed: int
    workers: int
    seconds: float


def objective(cfg: PipelineConfig, name: str, data: TrainingData, parent_run_id: str) -> Any:
    """Optuna's objective: one trial is one fit of model `name`, in a nested MLflow run."""
    import optuna

    search = cfg.search_of(name)

    def run(trial: optuna.Trial) -> float:
        point = optimizer.suggest(trial, search)
        with runs.trial_run(parent_run_id, name, trial.number, point) as (run_id, logger):
            result = optimizer.run_trial(cfg, name, data, trial, (logger,), point)
            failure = {"failure": result.error} if result.error else {}
            runs.end_trial_run(
                run_id, result.state, result.value, {"epochs": str(result.epochs), **failure}
            )
        for key, value in (
            ("epochs", result.epochs),
            ("seconds", result.seconds),
            ("run_id", run_id),
            ("error", result.error),
        ):
            trial.set_user_attr(key, value)
        if result.state == "pruned":
            raise optuna.TrialPruned(f"pruned at epoch {result.epochs}")
        if result.state == "failed":
            raise _TrialFailed(result.error)
        if result.value is None:
            raise _TrialFailed("the trial ended without a value")
        return float(result.value)

    return run


def _short(point: dict[str, Any]) -> str:
    parts = []
    for key, value in point.items():
        shown = f"{value:.3g}" if isinstance(value, float) else str(value)
        parts.append(f"{key.split('.', 1)[1]}={shown}")
    return " ".join(parts)


def progress_line(trial: optuna.trial.FrozenTrial, total: int, study: optuna.Study) -> str:
    """One line per finished trial: number, state, value, best so far, params, epochs, time."""
    state = _state_name(trial) or trial.state.name.lower()
    value = trial.value if trial.value is not None else _last_report(trial)
    shown = f"{value:.4f}" if value is not None else "-"
    try:
        best = f"best {study.best_value:.4f} (trial {study.best_trial.number})"
    except ValueError:
        best = "no complete trial yet"
    epochs = trial.user_attrs.get("epochs", "?")
    seconds = trial.user_attrs.get("seconds", 0.0)
    return (
        f"trial {trial.number} ({trial.number + 1}/{total}) {state:<8} {shown}  {best}  "
        f"{_short(trial.params)}"
        f"  [{epochs} epochs, {seconds:.1f} s]"
    )


def _last_report(trial: optuna.trial.FrozenTrial) -> float | None:
    steps = trial.intermediate_values
    return steps[max(steps)] if steps else None


def _start_point(cfg: PipelineConfig, name: str, study: optuna.Study) -> None:
    if cfg.search_of(name).start_from_params:
        point = optimizer.current_values(cfg, name)
        if point:
            study.enqueue_trial(point, skip_if_exists=True)


def _optimize(
    cfg: PipelineConfig,
    name: str,
    data_dir: Path,
    parent_run_id: str,
    study: optuna.Study,
    trials: int,
    callbacks: tuple[Any, ...] = (),
) -> None:
    """Read the data once and run `trials` trials of `study` in this process; a failed fit is
    a FAIL trial and the search goes on."""
    data = TrainingData.load(data_dir)
    study.optimize(
        objective(cfg, name, data, parent_run_id),
        n_trials=trials,
        timeout=cfg.search_of(name).timeout_s,
        catch=(_TrialFailed,),
        callbacks=list(callbacks),
    )


def _in_process(cfg: PipelineConfig, name: str, data_dir: Path, parent_run_id: str) -> optuna.Study:
    total = cfg.search_of(name).trials
    study = optimizer.create_study(cfg, name)
    _start_point(cfg, name, study)
    progress = (lambda s, t: log.info(progress_line(t, total, s)),)
    _optimize(cfg, name, data_dir, parent_run_id, study, total, progress)
    return study


def _worker_trials(
    cfg: PipelineConfig,
    name: str,
    data_dir: str,
    parent_run_id: str,
    storage: Any,
    study_name: str,
    trials: int,
    tracking_uri: str,
    stream: int,
) -> int:
    """On a Dask worker: run `trials` trials of the shared study, drawing from the sampler's
    `stream` (the worker's number), so that no two workers propose the same points."""
    warnings.filterwarnings("ignore", message=DASK_STORAGE_NOTE)
    show_messages()
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    study = optimizer.create_study(cfg, name, storage, study_name, stream=stream)
    _optimize(cfg, name, Path(data_dir), parent_run_id, study, trials)
    return trials


def _on_dask(
    cfg: PipelineConfig, name: str, data_dir: Path, parent_run_id: str, workers: int
) -> optuna.Study:
    """Trials on Dask workers, which share the study through Optuna's Dask storage (on the
    scheduler). The workers must see this project at the same path, as for retraining."""
    import optuna
    from distributed import Client, LocalCluster
    from optuna_integration import DaskStorage

    warnings.filterwarnings("ignore", message=DASK_STORAGE_NOTE)
    search = cfg.search_of(name)
    address = os.environ.get(DASK_ENV)
    cluster = None
    if not address:
        cluster = LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
        )
    where = address or f"a local cluster of {workers} worker processes"
    log.info(f"running {search.trials} trials {workers} at a time on Dask ({where})")
    try:
        with Client(address or cluster) as client:
            storage = DaskStorage(client=client)
            study_name = f"{name}-{parent_run_id}"
            study = optimizer.create_study(cfg, name, storage=storage, study_name=study_name)
            _start_point(cfg, name, study)
            shares = [
                search.trials // workers + (i < search.trials % workers) for i in range(workers)
            ]
            futures = [
                client.submit(
                    _worker_trials,
                    cfg,
                    name,
                    str(data_dir.resolve()),
                    parent_run_id,
                    storage,
                    study_name,
                    share,
                    connection.tracking_uri(),
                    stream,
                    pure=False,
                )
                for stream, share in enumerate(shares, start=1)
                if share
            ]
            shown: set[int] = set()
            while True:
                done = all(f.done() for f in futures)
                for trial in study.get_trials(deepcopy=False):
                    if _state_name(trial) and trial.number not in shown:
                        shown.add(trial.number)
                        log.info(progress_line(trial, search.trials, study))
                if done:
                    break
                time.sleep(1.0)
            client.gather(futures)  # a worker's error is raised here
            # A copy in memory: the Dask storage goes with the client.
            copy = optuna.create_study(direction=study.direction)
            copy.add_trials(study.get_trials())
            return copy
    finally:
        if cluster is not None:
            cluster.close()


def _state_name(trial: optuna.trial.FrozenTrial) -> str | None:
    """complete, pruned or failed: a finished trial's state; None while it runs."""
    import optuna

    names = {
        optuna.trial.TrialState.COMPLETE: "complete",
        optuna.trial.TrialState.PRUNED: "pruned",
        optuna.trial.TrialState.FAIL: "failed",
    }
    return names.get(trial.state)


def _states(study: optuna.Study) -> dict[str, int]:
    counts = {"complete": 0, "pruned": 0, "failed": 0}
    for trial in study.trials:
        state = _state_name(trial)
        if state:
            counts[state] += 1
    return counts


def tune(cfg: PipelineConfig, model: ModelRef, data_dir: Path, out_dir: Path) -> dict[str, Any]:
    """Search `model`'s space, log it to MLflow (parent run, nested trials, study plots)
    and write `out_dir/search.json` (the best params, for train) and `trials.csv`. Each
    trial trains on a config tuned to its point (`search.run_trial`)."""
    name = model.name
    search = cfg.search_of(name)
    workers = search.workers
    started = time.perf_counter()
    with runs.search_run(cfg, model, data_dir) as (parent_run_id, title):
        log.info(
            f"searching {name}: {search.trials} trials"
            + (f" (at most {search.timeout_s:.0f} s)" if search.timeout_s else "")
            + f", {optimizer.direction(cfg, name)} {search.metric}, pruner {search.pruner};"
            f" MLflow run {title} ({parent_run_id})"
        )
        if workers > 1:
            study = _on_dask(cfg, name, data_dir, parent_run_id, workers)
        else:
            study = _in_process(cfg, name, data_dir, parent_run_id)
        states = _states(study)
        if not states["complete"]:
            raise SearchFailed(
                f"search.{name}: no trial completed ({states}); see the failed trials' "
                f"`failure` tags under MLflow run {title}"
            )
        best = study.best_trial
        summary = SearchSummary(
            model=name,
            metric=search.metric,
            direction=optimizer.direction(cfg, name),
            best_value=float(best.values[0]),
            best_trial=best.number,
            best_params=optimizer.overrides(cfg, name, best.params),
            trials=len(study.trials),
            states=states,
            parent_run_id=parent_run_id,
            parent_run_name=title,
            seed=search.seed if search.seed is not None else cfg.base.seed,
            workers=workers,
            seconds=round(time.perf_counter() - started, 1),
        )
        run_logging.log_new_metrics(
            {
                f"best_{search.metric}": summary.best_value,
                "best_trial": best.number,
                **{f"trials_{k}": v for k, v in states.items()},
            }
        )
        run_logging.log_params({"best": summary.best_params})
        run_logging.log_figures(optimizer.study_plots(study), "search")
        out_dir.mkdir(parents=True, exist_ok=True)
        table = study.trials_dataframe(attrs=("number", "value", "state", "params", "user_attrs"))
        table.to_csv(out_dir / TRIALS_FILE, index=False)
        run_logging.log_artifacts({"search": out_dir / TRIALS_FILE})
        result = asdict(summary)
        (out_dir / runs.SEARCH_FILE).write_text(json.dumps(result, indent=2) + "\n")
    log.info(
        f"best: trial {best.number} of {summary.trials}, {search.metric} "
        f"{summary.best_value:.4f} with {_short(best.params)} ({states['complete']} complete, "
        f"{states['pruned']} pruned, {states['failed']} failed; {summary.seconds:.0f} s) "
        f"-> {out_dir / runs.SEARCH_FILE}"
    )
    return result


__all__ = ["SearchFailed", "tune"]
