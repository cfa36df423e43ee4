"""Hyperparameter search: `search:` params checked with errors that name the key, and the tune
stage on the real breast-cancer split against a real SQLite MLflow store: nested trial runs,
search.json, a train that uses the winner, seeded reproducibility, pruning, Dask workers and
the gate."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipelines.config import parse_config
from pipelines.errors import ConfigError

NAME, DATASET = "tabular-dnn", "breast_cancer"
TINY = {
    "dataset": DATASET,
    "trials": 3,
    "max_epochs": 2,
    "pruner": "none",
    "metric": "val_loss",
    "space": {
        "train.learning_rate": {"low": 0.001, "high": 0.03, "log": True},
        "model.units": {"choices": [8, 16]},
    },
}


def _params(raw_params: dict, search: dict | None = None, **train) -> dict:
    params = copy.deepcopy(raw_params)
    params["search"] = {NAME: copy.deepcopy(search or TINY)}
    params["models"][NAME]["train"].update(train)
    return params


def _edit(search: dict, path: str, value) -> dict:
    out = copy.deepcopy(search)
    node = out
    *parents, leaf = path.split("/")
    for key in parents:
        node = node[key]
    node[leaf] = value
    return out


@pytest.mark.parametrize(
    "path, value, key, why",
    [
        (
            "space/train.learnin_rate",
            {"low": 0.1, "high": 1},
            "space.train.learnin_rate",
            "unknown hyperparameter",
        ),
        (
            "space/train.learning_rate",
            {"low": 0.1, "high": 0.01},
            "space.train.learning_rate",
            r"low \(0.1\) is above high \(0.01\)",
        ),
        ("space/model.units", {"choices": []}, "space.model.units", "choices: empty"),
        ("trials", 0, "trials", "greater than or equal to 1"),
        ("metric", "test_accuracy", "metric", "is a test metric"),
        ("metric", "val_mae", "metric", "not logged for a classification model"),
        (
            "space/model.dropout",
            {"low": 0.0, "high": 0.5, "log": True},
            "space.model.dropout",
            "a log scale needs low > 0",
        ),
        (
            "space/model.dropout",
            {"low": 0.1, "high": 1.5},
            "space.model.dropout",
            "1.5 is not a valid setting",
        ),
        ("dataset", "digits", "dataset", "trains on 'breast_cancer'"),
        ("direction", "maximize", "direction", "val_loss is optimized with direction minimize"),
    ],
)
def test_a_bad_search_is_refused_naming_the_key(raw_params, path, value, key, why):
    with pytest.raises(ConfigError, match=rf"search\.{NAME}\.{key}: .*{why}"):
        parse_config(_params(raw_params, _edit(TINY, path, value)))


def test_a_search_of_an_unknown_model_names_it(raw_params):
    params = _params(raw_params)
    params["search"]["nope-dnn"] = params["search"].pop(NAME)
    with pytest.raises(ConfigError, match=r"search\.nope-dnn: no such model"):
        parse_config(params)


def test_the_best_params_override_the_model_and_a_number_stands_for_a_one_layer_list(raw_params):
    from pipelines.model.search import current_values, overrides

    cfg = parse_config(_params(raw_params))
    assert current_values(cfg, NAME) == {"train.learning_rate": 0.001}  # units [32] not a choice
    best = overrides(cfg, NAME, {"train.learning_rate": 0.02, "model.units": 16})
    assert best == {"train.learning_rate": 0.02, "model.units": [16]}
    tuned = cfg.with_overrides(NAME, best)
    assert tuned.entry(NAME).train.learning_rate == 0.02
    assert tuned.model_params(NAME).units == [16]
    assert cfg.entry(NAME).train.learning_rate == 0.001  # the original is untouched


def test_a_model_travels_with_its_searchs_best_params(raw_params):
    from pipelines.registry.runs import tuned

    cfg = parse_config(_params(raw_params))
    model = cfg.model(NAME)
    assert tuned(cfg, model, None) is model  # no search: params.yaml as it is
    best = tuned(cfg, model, {"best_params": {"train.learning_rate": 0.02, "model.units": [16]}})
    assert (best.name, best.train.learning_rate, best.params.units) == (NAME, 0.02, [16])
    assert model.train.learning_rate == 0.001 and model.params.units == [32]


def test_check_params_prints_the_bad_key_without_a_traceback(tmp_path, raw_params, repo_root):
    params = _params(
        raw_params, _edit(TINY, "space/train.learning_rate", {"low": 0, "high": 1, "log": True})
    )
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "check-params", "--params", str(path)],
        capture_output=True,
        text=True,
        cwd=repo_root,
    )
    assert proc.returncode == 1
    assert f"search.{NAME}.space.train.learning_rate" in proc.stderr
    assert "touches zero" in proc.stderr and "Traceback" not in proc.stderr


# --- the tune stage, end to end on real data ----------------------------------------------


def _write(store: Path, params: dict, name: str) -> str:
    path = store / f"{name}.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return str(path)


def _tune(store: Path, params: dict, out: str) -> dict:
    from pipelines.orchestration import stages

    return stages.tune(NAME, str(store / "data"), str(store / out), _write(store, params, out))


def _client():
    import mlflow

    return mlflow.MlflowClient(os.environ["MLFLOW_TRACKING_URI"])


def _trials(parent_run_id: str) -> list:
    from pipelines.registry.tracking import nested_runs

    return nested_runs.child_runs(parent_run_id)


@pytest.mark.e2e
def test_a_tiny_search_logs_nested_trials_and_train_uses_the_winner(store, raw_params):
    from pipelines.orchestration import stages

    params = _params(raw_params, max_epochs=20)
    result = _tune(store, params, "tiny")
    assert json.loads((store / "tiny" / "search.json").read_text()) == result
    assert result["trials"] == 3 and result["states"] == {"complete": 3, "pruned": 0, "failed": 0}
    client = _client()
    parent = client.get_run(result["parent_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.tags["stage"] == "tune"
    assert parent.data.metrics["best_val_loss"] == pytest.approx(result["best_value"])
    plots = {a.path for a in client.list_artifacts(parent.info.run_id, "search")}
    assert {"search/optimization_history.png", "search/parallel_coordinate.png"} <= plots
    assert "search/param_importances.png" in plots and "search/trials.csv" in plots

    trials = _trials(parent.info.run_id)
    assert [t.data.tags["trial"] for t in trials] == ["0", "1", "2"]
    values = []
    for trial in trials:
        assert trial.info.status == "FINISHED" and trial.data.tags["trial_state"] == "complete"
        assert set(trial.data.params) == set(TINY["space"])
        steps = [m.step for m in client.get_metric_history(trial.info.run_id, "val_loss")]
        assert steps == [1, 2]  # every epoch, as it ended
        values.append(trial.data.metrics["objective"])
    assert min(values) == pytest.approx(result["best_value"])
    # trial 0 starts from params.yaml (its units [32] is not a choice, so only the rate is kept)
    assert trials[0].data.params["train.learning_rate"] == "0.001"

    summary = stages.train(
        NAME,
        str(store / "data"),
        str(store / "tiny-model"),
        str(store / "tiny"),
        _write(store, params, "tiny"),
    )
    best = result["best_params"]
    assert summary["search"]["parent_run_id"] == parent.info.run_id
    assert summary["search"]["best_params"] == best
    run_id = json.loads((store / "tiny-model" / "run.json").read_text())["run_id"]
    run = client.get_run(run_id)
    assert run.data.tags["search_run_id"] == parent.info.run_id
    assert float(run.data.params["train.learning_rate"]) == best["train.learning_rate"]
    assert run.data.params["model.units"] == str(best["model.units"])
    assert float(run.data.params["search.best.train.learning_rate"]) == best["train.learning_rate"]
    import keras

    model = keras.saving.load_model(store / "tiny-model" / "model.keras", safe_mode=True)
    assert model.get_layer("dense_0").units == best["model.units"][0]


@pytest.mark.e2e
def test_the_same_seed_gives_the_same_trials_and_best_params(store, raw_params):
    params = _params(raw_params, _edit(TINY, "trials", 4))
    first, second = _tune(store, params, "seed-a"), _tune(store, params, "seed-b")
    assert first["parent_run_id"] != second["parent_run_id"]
    assert first["best_params"] == second["best_params"]
    assert first["best_value"] == second["best_value"]
    runs = [_trials(r["parent_run_id"]) for r in (first, second)]
    assert [t.data.params for t in runs[0]] == [t.data.params for t in runs[1]]
    assert [t.data.metrics["objective"] for t in runs[0]] == [
        t.data.metrics["objective"] for t in runs[1]
    ]
    other = _tune(store, _params(raw_params, _edit(TINY, "seed", 7)), "seed-c")
    assert [t.data.params for t in _trials(other["parent_run_id"])][1:] != [
        t.data.params for t in runs[0]
    ][1:3]


@pytest.mark.e2e
def test_a_pruned_trial_is_recorded_as_pruned(store, raw_params):
    """Two trials from the same initial weights: one learns, the other (a learning rate of
    1e-6) is behind it after one epoch, so a median pruner that needs one trial stops it."""
    import optuna

    from pipelines.model.training import TrainingData
    from pipelines.orchestration.tuning import objective
    from pipelines.registry import runs

    search = _edit(_edit(TINY, "max_epochs", 5), "space/train.learning_rate/low", 1e-6)
    cfg = parse_config(_params(raw_params, search))
    data = TrainingData.load(store / "data")
    study = optuna.create_study(
        pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0)
    )
    study.enqueue_trial({"train.learning_rate": 0.03, "model.units": 16})
    study.enqueue_trial({"train.learning_rate": 1e-6, "model.units": 16})
    with runs.search_run(cfg, cfg.model(NAME), store / "data") as (parent, _):
        study.optimize(objective(cfg, NAME, data, parent), n_trials=2)
    states = [t.state for t in study.trials]
    assert states == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED], states
    first, pruned = _trials(parent)
    assert first.data.tags["trial_state"] == "complete"
    assert pruned.data.tags["trial_state"] == "pruned" and pruned.info.status == "FINISHED"
    assert int(pruned.data.tags["epochs"]) < 5


@pytest.mark.e2e
def test_trials_run_on_a_local_two_worker_dask_cluster(store, raw_params):
    params = _params(raw_params, _edit(_edit(TINY, "workers", 2), "trials", 4))
    result = _tune(store, params, "dask")
    assert result["workers"] == 2 and result["trials"] == 4
    assert sum(result["states"].values()) == 4
    trials = _trials(result["parent_run_id"])
    assert sorted(t.data.tags["trial"] for t in trials) == ["0", "1", "2", "3"]
    assert all(t.info.status == "FINISHED" for t in trials)
    pids = {t.data.tags["pipelines.pid"] for t in trials}
    assert len(pids) == 2 and str(os.getpid()) not in pids  # both workers ran trials
    # Each worker draws from its own stream: no point is tried twice.
    points = [
        tuple(sorted((k, v) for k, v in t.data.params.items() if k in TINY["space"]))
        for t in trials
    ]
    assert len(set(points)) == 4 and all(points), points


@pytest.mark.e2e
def test_a_winner_that_trails_the_champion_is_registered_but_not_promoted(store, raw_params):
    from pipelines.model.evaluation import evaluate_model
    from pipelines.orchestration import stages
    from pipelines.registry.tracking import aliases

    def chain(params: dict, label: str, search_dir: str | None) -> dict:
        path = _write(store, params, label)
        stages.train(NAME, str(store / "data"), str(store / label), search_dir, path)
        evaluate_model(NAME, store / label / "model.keras", store / "data", store / f"{label}-eval")
        return stages.register(
            NAME,
            str(store / label),
            str(store / f"{label}-eval"),
            str(store / "data"),
            str(store / "raw.parquet"),
            str(store / "docs"),
            str(store / label / "reg.json"),
            path,
        )

    good = copy.deepcopy(raw_params)
    good["models"][NAME]["train"].update(max_epochs=25, learning_rate=0.01)
    champion = chain(good, "champion", None)
    assert champion["promoted"], champion["gate_failures"]

    weak = _edit(_edit(TINY, "space/train.learning_rate", {"choices": [1e-5]}), "trials", 1)
    params = _params(raw_params, weak, max_epochs=2)
    _tune(store, params, "weak-search")
    winner = chain(params, "weak", str(store / "weak-search"))
    assert not winner["promoted"] and winner["version"] != champion["version"]
    assert any(f.startswith("champion") for f in winner["gate_failures"]), winner["gate_failures"]
    assert aliases.alias_version(NAME) == champion["version"]
    version = _client().get_model_version(NAME, winner["version"])
    run = _client().get_run(version.run_id)
    assert run.data.tags["search_run_id"] and run.data.params["train.learning_rate"] == "1e-05"


def test_check_params_creates_a_new_models_search_folder(tmp_path, raw_params, repo_root):
    params = copy.deepcopy(raw_params)
    params["models"]["extra-dnn"] = {**copy.deepcopy(params["models"][NAME]), "problem": "extra"}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for name in raw_params["models"]:
        (tmp_path / "models" / name / "search").mkdir(parents=True)
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "check-params", "--params", "params.yaml"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(repo_root)},
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "models/extra-dnn/search/.gitkeep").is_file()
    assert "created models/extra-dnn/search/.gitkeep" in proc.stdout
    assert not (tmp_path / f"models/{NAME}/search/.gitkeep").exists()  # only what was missing


def test_tune_of_a_model_without_a_search_names_it(raw_params, tmp_path):
    from pipelines.orchestration import stages

    params = copy.deepcopy(raw_params)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    with pytest.raises(ConfigError, match=r"search\.images-cnn: model 'images-cnn' has no search"):
        stages.tune("images-cnn", str(tmp_path), str(tmp_path / "out"), str(path))


def test_the_workers_of_a_parallel_search_draw_their_own_points(raw_params):
    """Two workers share a study (as on Dask) and ask for a trial before either finished one:
    each draws from its own seeded stream, so they propose different points, and the same
    stream proposes the same point again."""
    import optuna

    from pipelines.model.search import create_study, suggest

    cfg = parse_config(_params(raw_params, _edit(_edit(TINY, "workers", 2), "trials", 12)))
    search = cfg.search_of(NAME)

    def first_points(storage, streams=(1, 2)) -> list[dict]:
        workers = [create_study(cfg, NAME, storage, "shared", stream=i) for i in streams]
        return [suggest(study.ask(), search) for study in workers]

    one, two = first_points(optuna.storages.InMemoryStorage())
    assert one != two, (one, two)
    assert first_points(optuna.storages.InMemoryStorage()) == [one, two]
    # What each worker did before: one seed for all, the same point twice.
    same = first_points(optuna.storages.InMemoryStorage(), streams=(0, 0))
    assert same[0] == same[1]
