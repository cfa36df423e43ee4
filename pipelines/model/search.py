"""A hyperparameter search as Optuna sees it: the space of `search.<model>` as distributions,
a seeded TPE sampler, a pruner fed each epoch's validation value, and one trial = one fit of
the model through the family registry, on data read once.

MLflow and Dask stay out of this module: `pipelines.orchestration.tuning` wraps `run_trial` with a
nested MLflow run per trial and runs trials in this process or on Dask workers.
"""

from __future__ import annotations

import gc
import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pipelines.config import PipelineConfig, searchable
from pipelines.errors import TrainingDiverged, failure_summary
from pipelines.metric_names import SEARCH_METRICS
from pipelines.model.training import TrainingData, best_epoch, fit_model
from pipelines.search_config import SearchConfig, SearchRange, searched_value

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    import optuna


def direction(cfg: PipelineConfig, name: str) -> Literal["minimize", "maximize"]:
    """`minimize` or `maximize`: the search's own, else its metric's."""
    search = cfg.search_of(name)
    if search.direction:
        return search.direction
    return next(d[search.metric] for d in SEARCH_METRICS.values() if search.metric in d)


def current_values(cfg: PipelineConfig, name: str) -> dict[str, Any]:
    """The params.yaml value of every searched key (trial 0 when `start_from_params`), as a
    point of the space (a list-valued parameter's single entry); a key whose value is not in
    the space is left out, for the sampler to choose."""
    sections = searchable(cfg, name)
    point = {}
    for key, spec in cfg.search_of(name).space.items():
        section, _, param = key.partition(".")
        value = sections[section][param]
        if isinstance(value, list):
            value = value[0] if len(value) == 1 else None
        if value is not None and _within(spec, value):
            point[key] = value
    return point


def _within(spec: SearchRange, value: Any) -> bool:
    if spec.choices is not None:
        return value in spec.choices
    if not isinstance(value, int | float):
        return False
    low, high = spec.bounds
    return low <= value <= high


def overrides(cfg: PipelineConfig, name: str, point: dict[str, Any]) -> dict[str, Any]:
    """A point of the space as `with_overrides` takes it (n becomes [n] where a list is due)."""
    sections = searchable(cfg, name)
    out = {}
    for key, value in point.items():
        section, _, param = key.partition(".")
        out[key] = searched_value(sections[section][param], value)
    return out


def sampler(search: SearchConfig, seed: int, stream: int = 0) -> optuna.samplers.BaseSampler:
    """TPE, seeded: in one process the same seed gives the same trials. Its first third of
    trials (2 to 10) sample at random, to give TPE something to model. `stream`: a Dask
    worker's number (from 1), added to the seed so that each worker draws its own points; with
    one seed for all, the k-th random trial of every worker would be the same point."""
    import optuna

    startup = max(2, min(10, search.trials // 3))
    base = search.seed if search.seed is not None else seed
    return optuna.samplers.TPESampler(seed=base + stream, n_startup_trials=startup)


def pruner(search: SearchConfig) -> optuna.pruners.BasePruner:
    """`median`: stop a trial whose epoch value is worse than the median of earlier trials at
    that epoch (after 3 complete trials and 2 epochs); `halving`: successive halving."""
    import optuna

    if search.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2)
    if search.pruner == "halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    return optuna.pruners.NopPruner()


def create_study(
    cfg: PipelineConfig,
    name: str,
    storage: Any = None,
    study_name: str | None = None,
    stream: int = 0,
) -> optuna.Study:
    """The search's study: in memory, or the named one in `storage` (created by the first
    caller, loaded by the others: the Dask workers, each with its own `stream` of the seeded
    sampler), with the pruner."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    search = cfg.search_of(name)
    return optuna.create_study(
        storage=storage,
        study_name=study_name,
        sampler=sampler(search, cfg.base.seed, stream),
        pruner=pruner(search),
        direction=direction(cfg, name),
        load_if_exists=study_name is not None,
    )


def suggest(trial: optuna.Trial, search: SearchConfig) -> dict[str, Any]:
    """One point of the space, asked of the trial (key -> value)."""
    point = {}
    for key, spec in search.space.items():
        if spec.choices is not None:
            point[key] = trial.suggest_categorical(key, spec.choices)
        elif spec.integer:
            low, high = spec.bounds
            step = int(spec.step or 1)
            point[key] = trial.suggest_int(key, int(low), int(high), step=step, log=spec.log)
        else:
            low, high = spec.bounds
            point[key] = trial.suggest_float(
                key, float(low), float(high), step=spec.step, log=spec.log
            )
    return point


@dataclass(frozen=True)
class TrialResult:
    number: int
    point: dict[str, Any]
    state: str  # complete | pruned | failed
    value: float | None
    epochs: int
    seconds: float
    error: str = ""


def _pruning_callback(trial: optuna.Trial, metric: str) -> Any:
    """Report each epoch's `metric` to the trial; stop training when the pruner says so."""
    import keras

    class Pruning(keras.callbacks.Callback):  # type: ignore[misc]  # keras ships no types
        pruned_at: int | None = None

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            value = (logs or {}).get(metric)
            if value is None:
                return
            trial.report(float(value), epoch + 1)
            if trial.should_prune():
                self.pruned_at = epoch + 1
                self.model.stop_training = True

    return Pruning()


def run_trial(
    cfg: PipelineConfig,
    name: str,
    data: TrainingData,
    trial: optuna.Trial,
    callbacks: tuple[Any, ...] = (),
    point: dict[str, Any] | None = None,
) -> TrialResult:
    """Fit model `name` once at the trial's point of the space (`point`: already asked),
    reporting every epoch to the pruner. The Keras session is cleared afterwards: TensorFlow
    otherwise keeps every trial's graph (tensorflow#61791). Never raises for a bad trial: a
    diverged or failing fit is a `failed` result."""
    import keras

    search = cfg.search_of(name)
    point = point if point is not None else suggest(trial, search)
    changes = overrides(cfg, name, point)
    if search.max_epochs is not None:
        changes["train.max_epochs"] = search.max_epochs
    started = time.perf_counter()
    pruning = _pruning_callback(trial, search.metric)
    try:
        model = cfg.tuned(cfg.model(name), changes)
        _, curves = fit_model(cfg, model, data, [pruning, *callbacks], verbose=0)
    except (TrainingDiverged, ValueError, RuntimeError) as err:  # a bad point, not a bad search
        seconds = time.perf_counter() - started
        reason = failure_summary(err, 500)
        return TrialResult(trial.number, point, "failed", None, 0, seconds, reason)
    finally:
        keras.backend.clear_session()
        gc.collect()
    seconds = time.perf_counter() - started
    if pruning.pruned_at is not None:
        value = float(curves[search.metric].iloc[-1])
        return TrialResult(trial.number, point, "pruned", value, len(curves), seconds)
    value = float(curves[search.metric].iloc[best_epoch(curves) - 1])
    return TrialResult(trial.number, point, "complete", value, len(curves), seconds)


def study_plots(study: optuna.Study) -> dict[str, Any]:
    """Optuna's optimization history, parameter importances and parallel coordinates as
    matplotlib figures (those the study has enough complete trials for)."""
    import matplotlib

    matplotlib.use("Agg")
    import optuna
    from optuna.visualization import matplotlib as plots

    figures = {}
    makers: dict[str, Callable[[Any], Any]] = {
        "optimization_history": plots.plot_optimization_history,
        "param_importances": plots.plot_param_importances,
        "parallel_coordinate": plots.plot_parallel_coordinate,
    }
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    for plot, make in makers.items():
        if plot != "optimization_history" and len(complete) < 2:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ExperimentalWarning on every matplotlib plot
            try:
                axes = make(study)
            except (ValueError, RuntimeError) as err:  # e.g. importances of a constant space
                log.info(f"no {plot} plot: {err}")
                continue
        figure = getattr(axes, "figure", None) or axes.flat[0].figure
        figure.set_size_inches(9, 5.5)
        figure.tight_layout()
        figures[plot] = figure
    return figures
