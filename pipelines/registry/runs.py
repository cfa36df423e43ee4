"""One MLflow run per training: opened when `train` starts, added to by `evaluate` and
`register`.

The train stage opens the run, logs params and dataset inputs, and hands Keras a callback that
logs every epoch while the model trains; the run id travels to the later stages in `run.json`,
a small output of `train`. When DVC reruns `register` alone (only gate params changed), the
training run already carries a registered version and MLflow params cannot change, so register
logs a new run tagged `training_run_id` with the training run's id.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.config import PipelineConfig
from pipelines.data.preprocessing import SPEC_FILE, Preprocessing
from pipelines.errors import ConfigError, failure_summary
from pipelines.model_config import ModelRef
from pipelines.registry.lineage import dvc_lock_hashes, git_state, lock_key
from pipelines.registry.tracking import epoch_logging, nested_runs, run_lifecycle, run_logging

log = logging.getLogger(__name__)

RUN_FILE = "run.json"  # an output of train: the MLflow run the later stages add to
SEARCH_FILE = "search.json"  # an output of tune (in models/<name>/search/): the best params
REGISTERED_TAG = "registered_version"  # set on a run once a version is registered from it


@dataclass(frozen=True)
class Experiment:
    """The DVC experiment a stage runs under (`dvc exp run` sets both variables)."""

    name: str
    baseline_rev: str

    @classmethod
    def current(cls) -> Experiment | None:
        name = os.environ.get("DVC_EXP_NAME", "").strip()
        return cls(name, os.environ.get("DVC_EXP_BASELINE_REV", "")) if name else None

    def run_tags(self) -> dict[str, str]:
        return {"dvc_exp_name": self.name, "dvc_baseline_rev": self.baseline_rev}

    def tags(self) -> dict[str, str]:
        """The version's tags: a candidate, and of which experiment."""
        return {"candidate": "true", **self.run_tags()}


def run_name(
    name: str, params: dict[str, Any], experiment: Experiment | None, data: str | None = None
) -> str:
    """What tells runs apart in the MLflow runs list: the DVC experiment's name, or the
    model's name, a short hash of its params and, after `-d`, `data` (`data_digest`): the
    weekly retrain on fresh rows has the same params as last week's and another name."""
    if experiment is not None:
        return f"{name}-{experiment.name}"
    digest = hashlib.sha1(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()
    return f"{name}-{digest[:8]}" + (f"-d{data}" if data else "")


def data_digest(prep: Preprocessing) -> str | None:
    """A short digest of the rows a model trains and validates on, from the split's recorded
    digests (`preprocessing.json`); None for a split that records none."""
    digests = (prep.split or {}).get("digests") or {}
    chosen = {part: digests[part] for part in ("train", "validation") if part in digests}
    if not chosen:
        return None
    return hashlib.sha1(json.dumps(chosen, sort_keys=True).encode()).hexdigest()[:6]


def training_params(cfg: PipelineConfig, model: ModelRef) -> dict[str, Any]:
    """What a training run is trained from (the gate's params come with registration)."""
    return {
        "dataset": model.dataset,
        "family": model.family,
        "seed": cfg.base.seed,
        "model": model.params.model_dump(),
        "train": model.train.model_dump(),
    }


def run_tags(cfg: PipelineConfig, model: ModelRef, modality: str) -> dict[str, str]:
    """The tags that find a run: model, family, dataset, seed, git commit, DVC experiment."""
    experiment = Experiment.current()
    return {
        "problem": model.problem,
        "model_name": model.name,
        "family": model.family,
        "dataset": model.dataset,
        "modality": modality,
        "seed": str(cfg.base.seed),
        **git_state(),
        **(experiment.run_tags() if experiment else {}),
    }


SPLIT_CONTEXTS = {"train": "training", "validation": "validation", "test": "test"}


def split_inputs(dataset: str, data_dir: Path) -> dict[str, tuple[str, Path, str | None]]:
    """The run's dataset inputs: each split of `dataset` (a file, or a folder of shards), with
    the md5 `dvc.lock` records for it (None outside a DVC project). The lock is the one of the
    folder the stage runs in: under `dvc exp run --temp` or the queue, the experiment's copy."""
    root = Path.cwd()
    hashes = dvc_lock_hashes(root / "dvc.lock", [f"split@{dataset}"])
    inputs = {}
    for split, context in SPLIT_CONTEXTS.items():
        path = data_dir / f"{split}.parquet"
        inputs[context] = (f"{dataset}-{split}", Path(path), hashes.get(lock_key(path, root)))
    return inputs


def load_search(cfg: PipelineConfig, name: str, search_dir: Path | None) -> dict[str, Any] | None:
    """What `tune@<name>` found (`search_dir/search.json`), for a model with a `search:`
    section; None for a model without one."""
    if name not in cfg.search:
        return None
    found = Path(search_dir or ".") / SEARCH_FILE
    if not found.is_file():
        raise ConfigError(
            f"search.{name}: {found} not found; the tune@{name} stage writes it "
            "(`dvc repro` runs it before train)"
        )
    search: dict[str, Any] = json.loads(found.read_text())
    return search


def tuned(cfg: PipelineConfig, model: ModelRef, search: dict[str, Any] | None) -> ModelRef:
    """`model` as it is trained: its params.yaml entry, overridden by the best params of its
    search, if it has one."""
    return cfg.tuned(model, search["best_params"] if search else {})


def search_record(search: dict[str, Any]) -> dict[str, Any]:
    """What a trained model keeps of its search (in training.json, on its run, in lineage)."""
    keys = (
        "parent_run_id",
        "metric",
        "direction",
        "best_value",
        "best_trial",
        "best_params",
        "trials",
        "states",
    )
    return {k: search[k] for k in keys}


def search_params(search: dict[str, Any] | None) -> dict[str, Any]:
    """The overrides a search made, as run params (`search.best.train.learning_rate`)."""
    if not search:
        return {}
    return {"search": {"best": search["best_params"], "trials": search["trials"]}}


def search_tags(search: dict[str, Any] | None) -> dict[str, str]:
    if not search:
        return {}
    return {"search_run_id": search["parent_run_id"], "search_metric": search["metric"]}


@contextmanager
def live_training_run(
    cfg: PipelineConfig,
    model: ModelRef,
    data_dir: Path,
    out_dir: Path,
    search: dict[str, Any] | None = None,
) -> Iterator[Any]:
    """Open `model`'s MLflow run as training starts and yield the Keras callback that
    logs each epoch to it. On success, `out_dir/run.json` names the run for evaluate and
    register; on failure the run ends FAILED (a diverged loss, say) naming why. `cfg` and
    `model` are the tuned ones when a search ran: its best params are logged as
    `search.best.*` params and the run is tagged with the search's parent run."""
    prep = Preprocessing.load(data_dir / SPEC_FILE)
    params = training_params(cfg, model)
    title = run_name(model.name, params, Experiment.current(), data_digest(prep))
    with run_lifecycle.open_run(
        cfg.base.experiment,
        run_name=title,
        tags={**run_tags(cfg, model, prep.modality), **search_tags(search)},
    ) as run_id:
        run_logging.log_params({**params, **search_params(search)})
        run_logging.log_inputs(split_inputs(model.dataset, data_dir))
        log.info(f"MLflow run {title} ({run_id}) open; epochs are logged as they end")
        yield epoch_logging.epoch_logger(run_id)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / RUN_FILE).write_text(
            json.dumps({"run_id": run_id, "run_name": title}, indent=2) + "\n"
        )


def _training_run(run_file: Path | None) -> tuple[str, dict[str, str]] | None:
    """(id, tags) of the run `run.json` names, if this store holds it: one store read."""
    if run_file is None or not Path(run_file).is_file():
        return None
    run_id = json.loads(Path(run_file).read_text()).get("run_id", "")
    state = run_lifecycle.run_state(run_id) if run_id else None
    if state is None:
        log.info(
            f"the training run {run_id or '?'} named in {run_file} is not in this MLflow store"
        )
        return None
    return run_id, state[1]


def training_run_id(run_file: Path | None) -> str | None:
    """The run `run.json` names, if this store holds it."""
    found = _training_run(run_file)
    return found[0] if found else None


def run_to_resume(run_file: Path | None) -> tuple[str | None, str | None]:
    """(the run register adds to, the training run): the training run itself, unless it
    already carries a registered version (DVC reran register alone): then None, and register
    logs a new run linked to it."""
    found = _training_run(run_file)
    if found is None:
        return None, None
    run_id, tags = found
    return (None if REGISTERED_TAG in tags else run_id), run_id


def add_evaluation(
    experiment: str, run_file: Path | None, metrics: dict[str, float], plot: Path
) -> str | None:
    """Add the test metrics and the test plot to the training run; returns its id (None when
    there is no run to add to)."""
    run_id = training_run_id(run_file)
    if run_id is None:
        return None
    with run_lifecycle.open_run(experiment, resume=run_id):
        run_logging.log_new_metrics(metrics)
        run_logging.log_artifacts({"evaluation": plot})
    return run_id


def search_run_name(model: ModelRef, cfg: PipelineConfig) -> str:
    """The parent run of `model`'s search: the DVC experiment's name, or a hash of the
    search and training params."""
    params = {**training_params(cfg, model), "search": cfg.search_of(model.name).model_dump()}
    return run_name(f"{model.name}-search", params, Experiment.current())


@contextmanager
def search_run(cfg: PipelineConfig, model: ModelRef, data_dir: Path) -> Iterator[tuple[str, str]]:
    """The parent run of `model`'s search, open while its trials run (each one a nested run);
    yields its id and name."""
    prep = Preprocessing.load(data_dir / SPEC_FILE)
    search = cfg.search_of(model.name)
    inputs = split_inputs(model.dataset, data_dir)
    title = search_run_name(model, cfg)
    with run_lifecycle.open_run(
        cfg.base.experiment,
        run_name=title,
        tags={
            **run_tags(cfg, model, prep.modality),
            "stage": "tune",
            "search_metric": search.metric,
        },
    ) as run_id:
        run_logging.log_params(
            {
                **training_params(cfg, model),
                "search": search.model_dump(exclude={"space"}),
                "space": {k: _range_text(v) for k, v in search.space.items()},
            }
        )
        run_logging.log_inputs({k: v for k, v in inputs.items() if k != "test"})
        yield run_id, title


def _range_text(spec: Any) -> str:
    if spec.choices is not None:
        return f"choices {spec.choices}"
    scale = " log" if spec.log else ""
    return f"[{spec.low}, {spec.high}]{scale}" + (f" step {spec.step}" if spec.step else "")


@contextmanager
def trial_run(
    parent_run_id: str, name: str, number: int, point: dict[str, Any]
) -> Iterator[tuple[str, Any]]:
    """A trial's nested run: its params, and a Keras callback logging each epoch to it.
    Yields (run id, callback); closing is `end_trial_run`'s (the state is known only then).
    A trial that raises ends FAILED."""
    run_id = nested_runs.start_child_run(
        parent_run_id,
        f"{name}-trial-{number:03d}",
        point,
        {"model_name": name, "trial": str(number), "stage": "tune"},
    )
    try:
        yield run_id, epoch_logging.epoch_logger(run_id)
    except BaseException as err:
        failure = {"trial_state": "failed", "failure": failure_summary(err, 500)}
        nested_runs.end_child_run(run_id, "FAILED", failure, {})
        raise


def end_trial_run(run_id: str, state: str, value: float | None, extra: dict[str, str]) -> None:
    """Close a trial's run: FINISHED when complete or pruned, FAILED when it failed. The
    state is its `trial_state` tag; the value the search compares, its `objective` metric."""
    status = "FAILED" if state == "failed" else "FINISHED"
    metrics = {"objective": value} if value is not None else {}
    nested_runs.end_child_run(run_id, status, {"trial_state": state, **extra}, metrics)
