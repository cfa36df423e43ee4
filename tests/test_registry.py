"""Registration behind the full gate, against a real SQLite MLflow store in a temp folder.

One registry is shared by the tests of this module. Each test passes alone and in any order:
those that need a champion ask the `champion` fixture for one, the first-version test uses a
store of its own, and a test that tampers with an artifact puts it back."""

from __future__ import annotations

import copy
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.config import parse_config
from pipelines.registry.tracking import (
    aliases,
    connection,
    fresh_process,
    model_versions,
    run_logging,
)
from tests.chain import train_and_evaluate

NAME = "tabular-dnn"


@pytest.fixture(scope="module")
def trained(store, raw_params):
    """Two real models on the store's split (conftest): a decent one, and one that always
    answers the minority class (worse than the champion and than the majority baseline,
    deterministically)."""
    from pipelines.data.preprocessing import SPEC_FILE, Preprocessing
    from pipelines.model.builders import build_model
    from pipelines.model.evaluation import evaluate_model
    from pipelines.model.training import HISTORY_FILE, MODEL_FILE, TRAINING_FILE

    params = copy.deepcopy(raw_params)
    params["models"][NAME]["train"].update(max_epochs=25, learning_rate=0.01)
    cfg = parse_config(params)
    train_and_evaluate(cfg, NAME, store / "data", store / "good", store / "good-eval")

    prep = Preprocessing.load(store / "data" / SPEC_FILE)
    bad = build_model("dnn", {"units": [4]}, prep, cfg.model(NAME).train)
    head = bad.get_layer("probabilities")
    kernel, _ = head.get_weights()
    head.set_weights([np.zeros_like(kernel), np.array([5.0, -5.0], dtype="float32")])
    (store / "bad").mkdir()
    bad.save(store / "bad" / MODEL_FILE)
    for name in (HISTORY_FILE, TRAINING_FILE):
        shutil.copy(store / "good" / name, store / "bad" / name)
    evaluate_model(NAME, store / "bad" / MODEL_FILE, store / "data", store / "bad-eval")

    # A worse model that still beats the baselines: the good one with its output pushed
    # towards class 0, just enough to lose a few points of test accuracy.
    import keras

    good_accuracy = json.loads((store / "good-eval" / "metrics.json").read_text())["test"]
    (store / "worse").mkdir()
    for name in (HISTORY_FILE, TRAINING_FILE):
        shutil.copy(store / "good" / name, store / "worse" / name)
    for shift in (0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0):
        worse = keras.saving.load_model(store / "good" / MODEL_FILE, safe_mode=True)
        head = worse.get_layer("probabilities")
        kernel, bias = head.get_weights()
        head.set_weights([kernel, bias + np.array([shift, 0.0], dtype="float32")])
        worse.save(store / "worse" / MODEL_FILE)
        evaluate_model(NAME, store / "worse" / MODEL_FILE, store / "data", store / "worse-eval")
        metrics = json.loads((store / "worse-eval" / "metrics.json").read_text())
        if metrics["test"]["accuracy"] <= good_accuracy["accuracy"] - 0.04:
            break
    assert metrics["test"]["accuracy"] > metrics["baselines"]["majority"]["accuracy"] + 0.1
    (store / "docs").mkdir()
    (store / "docs" / "index.html").write_text("<html>docs</html>")
    return params


def test_evaluate_reads_trains_test_outputs_without_tensorflow(store, trained, tmp_path):
    """train wrote the saved model's test outputs beside it; evaluate turns them into the same
    metrics and predictions as scoring the model itself, in a process that never imports
    TensorFlow, and refuses outputs scored on another split; scoring again writes the same
    bytes."""
    from pipelines.model.evaluation import evaluate_model, evaluate_saved_outputs
    from pipelines.model.scoring import OUTPUTS_FILE

    outputs = store / "good" / OUTPUTS_FILE
    code = (
        "import sys; from pathlib import Path\n"
        "from pipelines.model.evaluation import evaluate_saved_outputs\n"
        "evaluate_saved_outputs(sys.argv[1], *map(Path, sys.argv[2:]))\n"
        "loaded = sorted(m for m in ('tensorflow', 'keras') if m in sys.modules)\n"
        "assert not loaded, f'evaluate imported {loaded}'\n"
    )
    args = [NAME, str(outputs), str(store / "data"), str(tmp_path / "from-outputs")]
    subprocess.run([sys.executable, "-c", code, *args], check=True, timeout=120)
    evaluate_model(NAME, store / "good" / "model.keras", store / "data", tmp_path / "in-process")
    for name in ("metrics.json", "test_predictions.npy"):
        ours = (tmp_path / "from-outputs" / name).read_bytes()
        assert ours == (tmp_path / "in-process" / name).read_bytes(), name

    # The same model scored again gives the same bytes (no save time in the file): DVC sees
    # a retrain that changed nothing as no change.
    from pipelines.model.scoring import write_test_outputs

    write_test_outputs(store / "good" / "model.keras", store / "data", tmp_path / "again.npz")
    assert (tmp_path / "again.npz").read_bytes() == outputs.read_bytes()

    stale = tmp_path / "stale.npz"
    np.savez(stale, test=np.load(outputs)["test"][:-3])
    with pytest.raises(ValueError, match="do not match the test split"):
        evaluate_saved_outputs(NAME, stale, store / "data", tmp_path / "stale-eval")


_COPIES = itertools.count()


def _retrained(store, model: str) -> str:
    """A copy of `model` whose file differs from it only in its zip comment: the same weights
    under another MD5, as a retrain with the same seed gives (Keras stamps the save time)."""
    copy_name = f"{model}-{next(_COPIES)}"
    shutil.copytree(store / model, store / copy_name)
    with zipfile.ZipFile(store / copy_name / "model.keras", "a") as archive:
        archive.comment = copy_name.encode()
    return copy_name


def _register(
    store,
    params,
    gate: dict | None = None,
    model="good",
    evaluation="good-eval",
    data="data",
    same_file=False,
):
    """Register `model` (by default a fresh copy of it, so each call is a new model file)."""
    from pipelines.registry.registration import register_model

    params = copy.deepcopy(params)
    if gate is not None:
        params["models"][NAME]["gate"] = gate
    cfg = parse_config(params)
    return register_model(
        cfg,
        cfg.model(NAME),
        model_dir=store / (model if same_file else _retrained(store, model)),
        eval_dir=store / evaluation,
        data_dir=store / data,
        raw_data=store / "raw.parquet",
        docs_dir=store / "docs",
        out=store / "registration.json",
    )


LENIENT = {"min": {"accuracy": 0.5}}


@pytest.fixture
def champion(store, trained) -> str:
    """The version that is `@champion`: the good model, registered if there is none yet."""
    version = aliases.alias_version(NAME)
    if version is None:
        result = _register(store, trained, LENIENT)
        assert result.promoted, result.gate_failures
        version = result.version
    return version


def test_a_version_failing_thresholds_is_registered_but_not_promoted(store, trained):
    before = aliases.alias_version(NAME)
    result = _register(store, trained, {"min": {"accuracy": 0.9999}})
    assert not result.promoted
    assert result.gate_failures[0].startswith("accuracy")
    assert aliases.alias_version(NAME) == before
    info = model_versions.version_info(NAME, result.version)
    assert info.tags["gate"] == "failed"
    assert info.tags["gate.thresholds"].startswith("FAILED")
    saved = json.loads((store / "registration.json").read_text())
    assert saved["promoted"] is False and saved["version"] == result.version


def test_the_first_passing_version_becomes_champion_with_lineage(store, trained, monkeypatch):
    import mlflow

    # A store of its own, so that this version is the model's first.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store / 'first.db'}")
    result = _register(store, trained, LENIENT)
    assert result.promoted and result.version == "1" and result.previous_champion is None
    assert aliases.alias_version(NAME) == "1"
    checks = {c["name"]: c for c in result.checks}
    assert checks["champion"]["detail"] == "no champion yet"
    assert "fresh process max |difference| 0" in checks["parity"]["detail"]
    client = mlflow.MlflowClient()
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    for tag in ("git_commit", "git_dirty", "data_md5", "seed", "problem", "family", "dataset"):
        assert tag in run.data.tags
    assert {"test_accuracy", "baseline_majority_accuracy", "best_epoch", "stopped_epoch"} <= set(
        run.data.metrics
    )
    assert len(client.get_metric_history(result.run_id, "val_loss")) == int(
        run.data.metrics["stopped_epoch"]
    )
    logged = {a.path for a in client.list_artifacts(result.run_id)}
    assert {
        "evaluation",
        "training",
        "data_docs",
        "preprocessing",
        "golden",
        "lineage.json",
    } <= logged
    lineage = mlflow.artifacts.load_dict(f"runs:/{result.run_id}/lineage.json")
    assert lineage["gate"] == {"passed": True, "promoted": True, "checks": result.checks}
    assert lineage["seed"] == 42 and lineage["data"]["split"]["method"] == "row-hash-v1"
    assert {"python", "keras", "mlflow"} <= set(lineage["versions"])
    assert lineage["epochs"]["stopped"] >= lineage["epochs"]["best"]

    model = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    raw = pd.read_parquet(store / "data" / "test.parquet")
    x = raw[model.metadata.metadata["features"]].to_numpy("float64")
    expected = np.load(store / "good-eval" / "test_predictions.npy")
    np.testing.assert_allclose(model.predict(x), expected, atol=1e-6)


def test_a_challenger_worse_than_the_champion_is_refused(store, trained, champion):
    # It passes every threshold and beats the baselines; only the champion comparison stops it.
    result = _register(store, trained, {}, model="worse", evaluation="worse-eval")
    assert not result.promoted
    failed = [c for c in result.checks if not c["passed"]]
    assert [c["name"] for c in failed] == ["champion"]
    assert "not shown to be within the margin of the champion: accuracy" in failed[0]["detail"]
    assert "upper bound of how much worse the challenger is" in failed[0]["detail"]
    assert aliases.alias_version(NAME) == champion
    assert (
        model_versions.version_info(NAME, result.version).tags["gate.champion"].startswith("FAILED")
    )


def test_a_version_that_does_not_beat_the_baseline_is_refused(store, trained, champion):
    result = _register(
        store, trained, {"beat_baseline": ["accuracy"]}, model="bad", evaluation="bad-eval"
    )
    assert not result.promoted
    assert any("beats majority" in f for f in result.gate_failures)
    assert aliases.alias_version(NAME) == champion


def test_a_version_that_does_not_serve_the_pipeline_predictions_is_refused(
    store, trained, champion
):
    # The pipeline's predictions come from one model, the registered artifact is another:
    # exactly what a preprocessing step outside the model would look like.
    result = _register(store, trained, {}, model="bad", evaluation="good-eval")
    assert not result.promoted
    assert [c["name"] for c in result.checks if not c["passed"]] == ["parity"]
    assert aliases.alias_version(NAME) == champion


def test_an_equal_or_better_challenger_is_promoted_and_rollback_swaps(store, trained, champion):
    from pipelines.registry.tracking.aliases import rollback

    result = _register(store, trained, LENIENT)
    assert result.promoted and result.previous_champion == champion
    assert aliases.alias_version(NAME) == result.version
    assert aliases.alias_version(NAME, "previous-champion") == champion
    assert rollback(NAME) == (champion, result.version)
    assert aliases.alias_version(NAME) == champion
    assert rollback(NAME) == (result.version, champion)
    # A SIGTERM that lands between the two alias writes waits for the second one.
    proc = subprocess.run(
        [sys.executable, "-c", _TERM_AFTER_FIRST_ALIAS_WRITE, NAME],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 128 + signal.SIGTERM, proc.stdout + proc.stderr
    assert "alias writes: 2" in proc.stdout, proc.stdout + proc.stderr
    assert aliases.alias_version(NAME) == champion
    assert aliases.alias_version(NAME, "previous-champion") == result.version
    assert rollback(NAME) == (result.version, champion)


# A rollback in its own process, as `pipelines rollback` runs it, whose process gets a SIGTERM
# right after the first alias write: the way a stop lands between the two.
_TERM_AFTER_FIRST_ALIAS_WRITE = """
import atexit, os, signal, sys
import mlflow
from pipelines.cli import _exit_on_sigterm
from pipelines.registry.tracking.aliases import rollback
signal.signal(signal.SIGTERM, _exit_on_sigterm)
write = mlflow.MlflowClient.set_registered_model_alias
writes = []
def then_stopped(self, *args, **kwargs):
    write(self, *args, **kwargs)
    writes.append(args)
    if len(writes) == 1:
        os.kill(os.getpid(), signal.SIGTERM)
mlflow.MlflowClient.set_registered_model_alias = then_stopped
atexit.register(lambda: print(f"alias writes: {len(writes)}", flush=True))
rollback(sys.argv[1])
"""


def _lock(store, md5: str):
    lock = store / "dvc.lock"
    lock.write_text(
        f"stages:\n  ingest@breast_cancer:\n    outs:\n    - path: raw.parquet\n      md5: {md5}\n"
    )
    return lock


def test_verify_passes_on_a_good_version(store, trained, champion):
    from pipelines.registry.lineage import file_md5
    from pipelines.registry.serving import verify_version

    ok, problems = verify_version(f"{NAME}@champion", _lock(store, file_md5(store / "raw.parquet")))
    assert problems == []
    assert any("parity" in line for line in ok)


def test_verify_says_when_the_data_has_moved_on(store, trained, champion):
    from pipelines.registry.serving import verify_version

    _, problems = verify_version(f"{NAME}@champion", _lock(store, "0" * 32))
    assert len(problems) == 1 and "the data has moved on" in problems[0]


def test_verify_catches_a_deleted_artifact(store, trained, champion):
    import mlflow

    from pipelines.registry.lineage import file_md5
    from pipelines.registry.serving import verify_version

    info = model_versions.version_info(NAME, "champion")
    artifact_dir = mlflow.MlflowClient().get_run(info.run_id).info.artifact_uri
    golden = artifact_dir.removeprefix("file://") + "/golden/predictions.npy"
    shutil.copy(golden, store / "kept.npy")
    os.remove(golden)
    try:
        lock = _lock(store, file_md5(store / "raw.parquet"))
        _, problems = verify_version(f"{NAME}@champion", lock)
    finally:  # the other tests share this champion
        shutil.copy(store / "kept.npy", golden)
    assert any("golden sample missing" in p for p in problems)


def test_batch_scoring_writes_predictions_beside_the_input(store, trained, champion):
    from pipelines.errors import DataError
    from pipelines.registry.serving import score_file

    raw = pd.read_parquet(store / "data" / "test.parquet").drop(columns=["target"])
    path = store / "incoming.csv"
    raw.to_csv(path, index=False)
    out = score_file(f"{NAME}@champion", path, chunk_rows=50)
    assert out == store / "incoming.predictions.parquet"
    scored = pd.read_parquet(out)
    assert list(scored.columns) == ["predicted", "probability_0", "probability_1"]
    assert len(scored) == len(raw)
    np.testing.assert_allclose(scored[["probability_0", "probability_1"]].sum(axis=1), 1, rtol=1e-5)
    raw.drop(columns=["mean_area"]).to_csv(store / "short.csv", index=False)
    with pytest.raises(DataError, match="missing 1 feature column"):
        score_file(f"{NAME}@champion", store / "short.csv")
    # A NaN is refused with the request checks' message, as serving refuses it, naming the
    # row (counted within its chunk of 50, which the message says).
    raw.iloc[[61], raw.columns.get_loc("mean_area")] = np.nan
    raw.to_csv(store / "gap.csv", index=False)
    with pytest.raises(DataError) as err:
        score_file(f"{NAME}@champion", store / "gap.csv", chunk_rows=50)
    assert str(err.value) == (
        f"{store / 'gap.csv'}: {NAME}: 1 NaN, null or infinite value(s), first at row 11, "
        "feature 'mean_area'; every value must be a finite number "
        "(rows counted from row 50 of the file)"
    )
    assert not (store / "gap.predictions.parquet").exists()


def test_fresh_process_scoring_names_a_model_that_cannot_load(store, trained, champion, tmp_path):
    inputs = tmp_path / "inputs.npy"
    np.save(inputs, np.zeros((2, 30), dtype="float32"))
    good, missing = fresh_process.score_in_fresh_process(
        [(f"models:/{NAME}/{champion}", inputs), (f"models:/{NAME}/999", inputs)]
    )
    assert good.shape == (2, 2) and np.allclose(good.sum(axis=1), 1)
    assert isinstance(missing, str) and "999" in missing


def test_a_scorer_started_ahead_scores_the_registration_or_is_stopped(store, trained, champion):
    """The register command starts its fresh process before it looks up whether there is
    anything to register: the registration then scores in that very process; a command with
    nothing to register stops it."""
    from pipelines.registry.tracking.fresh_process import (
        _AHEAD,
        start_scorer_ahead,
        started_scorer,
        stop_scorer_ahead,
    )

    inputs = store / "ahead-inputs.npy"
    np.save(inputs, np.zeros((2, 30), dtype="float32"))
    start_scorer_ahead()
    (ahead,) = _AHEAD
    with started_scorer() as scorer:
        assert scorer is ahead and not _AHEAD
        (got,) = scorer.score([(f"models:/{NAME}/{champion}", inputs)])
    assert got.shape == (2, 2) and np.allclose(got.sum(axis=1), 1)

    start_scorer_ahead()
    (unused,) = _AHEAD
    process = unused._process
    stop_scorer_ahead()
    assert not _AHEAD and process.poll() is not None  # stopped, not left importing


def test_spares_forked_from_the_started_scorer_each_score_a_registration(
    store, trained, champion, tmp_path
):
    """The stage server's scorer (the scorer script with its zygote flag) forks a spare per
    request once its imports are done; each says its own pid, scores in its own process (a
    child of the scorer, which never imported this project) and ends. A keep-alive (what the
    server sends when a train or evaluate command says a register command is to come) does not
    end it."""
    from pipelines.orchestration.stage_server import _fork_spare, _start_scorer
    from pipelines.registry.tracking.fresh_process import FORKING_ARGV, FreshScorer, scorer_env

    inputs = store / "forked-inputs.npy"
    np.save(inputs, np.zeros((2, 30), dtype="float32"))
    spec = {"argv": list(FORKING_ARGV), "env": scorer_env(), "cwd": os.getcwd()}
    started = _start_scorer(spec, tmp_path)
    try:
        started.control.send(b"k")
        pids = set()
        for _ in range(2):
            spare = FreshScorer(*_fork_spare(started, tmp_path))
            (got,) = spare.score([(f"models:/{NAME}/{champion}", inputs)])
            assert got.shape == (2, 2) and np.allclose(got.sum(axis=1), 1)
            assert spare._pid is not None and spare._pid != started.process.pid
            pids.add(spare._pid)
        assert len(pids) == 2 and started.process.poll() is None  # it waits for the next
    finally:
        started.process.kill()
        started.process.wait()


def _champion_files(champion: str):
    import mlflow

    location = mlflow.MlflowClient().get_model_version_download_uri(NAME, champion)
    return Path(location.removeprefix("file://"))


def test_a_champion_that_cannot_be_scored_fails_closed(store, trained, champion):
    """With the champion's model files out of reach, a worse challenger is not promoted, on
    the main line or by `pipelines promote`, and the message names the cause."""
    from pipelines.errors import GateRefused
    from pipelines.registry.promote import promote_version

    files = _champion_files(champion)
    files.rename(files.with_name("moved-away"))
    try:
        result = _register(store, trained, {}, model="worse", evaluation="worse-eval")
        cfg = parse_config(trained)
        with pytest.raises(GateRefused, match=rf"the champion \(v{champion}\) could not be loaded"):
            promote_version(cfg, cfg.model(NAME), result.version, store / "data")
    finally:  # the other tests share this champion
        files.with_name("moved-away").rename(files)
    assert not result.promoted and aliases.alias_version(NAME) == champion
    (failed,) = [c for c in result.checks if not c["passed"]]
    assert failed["name"] == "champion"
    assert failed["detail"].startswith(f"the champion (v{champion}) could not be loaded")
    assert result.gate == "failed"


def test_the_same_model_file_is_one_version_judged_again_on_the_main_line(
    store, trained, champion, monkeypatch
):
    """A model file already registered (as a candidate of an experiment) is not registered
    again: the main line judges that version and promotes it; registration.json says so."""
    import mlflow

    client = mlflow.MlflowClient()
    count = len(client.search_model_versions(f"name = '{NAME}'"))
    model = _retrained(store, "good")
    monkeypatch.setenv("DVC_EXP_NAME", "same-file")
    candidate = _register(store, trained, LENIENT, model=model, same_file=True)
    again = _register(store, trained, LENIENT, model=model, same_file=True)
    assert again.version == candidate.version and again.candidate and not again.promoted
    monkeypatch.delenv("DVC_EXP_NAME")
    promoted = _register(store, trained, LENIENT, model=model, same_file=True)
    assert len(client.search_model_versions(f"name = '{NAME}'")) == count + 1
    assert promoted.version == candidate.version and promoted.promoted
    assert promoted.champion == candidate.version and promoted.previous_champion == champion
    saved = json.loads((store / "registration.json").read_text())
    assert saved["version"] == candidate.version and saved["champion"] == candidate.version
    # the champion's own file again: nothing to register or promote
    assert _register(store, trained, LENIENT, model=model, same_file=True) == promoted
    aliases.rollback(NAME)  # the other tests share this champion
    assert aliases.alias_version(NAME) == champion


def _relabelled(store, name: str, classes: list, mapping: dict) -> str:
    """The test split with its classes renamed (`mapping`) and `classes` in preprocessing.json:
    a changed class set, the model and its predictions unchanged."""
    from pipelines.data.preprocessing import SPEC_FILE

    (store / name).mkdir(exist_ok=True)
    for file in (store / "data").iterdir():
        shutil.copy(file, store / name / file.name)
    test = pd.read_parquet(store / "data" / "test.parquet")
    test["target"] = test["target"].map(mapping)
    test.to_parquet(store / name / "test.parquet", index=False)
    spec = json.loads((store / "data" / SPEC_FILE).read_text())
    spec["classes"] = classes
    (store / name / SPEC_FILE).write_text(json.dumps(spec))
    return name


def test_a_changed_class_set_is_refused_as_a_schema_change_after_registering(
    store, trained, champion
):
    """Classes added, removed or renamed: no misaligned comparison and no crash once the
    version is registered (log loss as the primary metric indexes by class); the message
    names what changed and the way forward."""
    renamed = _relabelled(store, "renamed", ["benign", "malignant"], {0: "benign", 1: "malignant"})
    added = _relabelled(store, "added", [0, 1, 2], {0: 0, 1: 1})
    for data, change in (
        (renamed, "2 classes added (benign, malignant); 2 classes removed (0, 1)"),
        (added, "1 classes added (2)"),
    ):
        result = _register(store, trained, {"primary_metric": "log_loss", **LENIENT}, data=data)
        assert not result.promoted and aliases.alias_version(NAME) == champion
        (failed,) = [c for c in result.checks if not c["passed"]]
        assert f"schema change against the champion (v{champion}): {change}" in failed["detail"]
        assert f"pipelines promote {NAME} {result.version} --without-comparison" in failed["detail"]


def test_classes_in_another_order_are_matched_by_name(store, trained, champion):
    """The same champion model, its classes listed in the other order in the challenger's
    data: aligned by name, the comparison finds them equal (misaligned, the champion would
    score 0)."""
    swapped = _relabelled(store, "swapped", [1, 0], {0: 1, 1: 0})
    predictions = np.load(store / "good-eval" / "test_predictions.npy")[:, ::-1]
    (store / "swapped-eval").mkdir(exist_ok=True)
    for file in (store / "good-eval").iterdir():
        shutil.copy(file, store / "swapped-eval" / file.name)
    np.save(store / "swapped-eval" / "test_predictions.npy", predictions)
    result = _register(
        store, trained, LENIENT, model="good", evaluation="swapped-eval", data=swapped
    )
    checks = {c["name"]: c for c in result.checks}
    accuracy = re.search(
        r"accuracy: champion (\S+), challenger (\S+);", checks["champion"]["detail"]
    )
    assert accuracy and accuracy.group(1) == accuracy.group(2), checks["champion"]
    assert checks["champion"]["passed"]
    aliases.promote(NAME, champion, expected=aliases.alias_version(NAME))  # shared champion


def test_promote_refuses_a_candidate_trained_on_another_split(
    store, trained, champion, monkeypatch
):
    """A candidate whose data was split with another salt (another seed) may have trained on
    current test rows: promote refuses, saying so, until told to skip the comparison."""
    from pipelines.data.preprocessing import split_and_fit
    from pipelines.errors import GateRefused
    from pipelines.model.evaluation import evaluate_model
    from pipelines.registry.promote import promote_version

    cfg = parse_config(trained)
    split_and_fit(
        "breast_cancer", store / "raw.parquet", cfg.dataset("breast_cancer"), 7, store / "seed7"
    )
    evaluate_model(NAME, store / "good" / "model.keras", store / "seed7", store / "seed7-eval")
    monkeypatch.setenv("DVC_EXP_NAME", "another-seed")
    other = _register(store, trained, LENIENT, evaluation="seed7-eval", data="seed7")
    monkeypatch.delenv("DVC_EXP_NAME")
    with pytest.raises(GateRefused, match=r"salt 'seed-7' \(current: 'seed-42'\)"):
        promote_version(cfg, cfg.model(NAME), other.version, store / "data")
    assert aliases.alias_version(NAME) == champion
    assert promote_version(
        cfg, cfg.model(NAME), other.version, store / "data", without_comparison=True
    )
    info = model_versions.version_info(NAME, other.version)
    assert info.tags["gate.champion_comparison"].startswith("skipped")
    saved_lineage = run_logging.download_run_artifacts(info.run_id, "lineage.json", store / "lin")
    events = json.loads(saved_lineage.read_text())["events"]
    assert events[-1]["event"] == "promoted by pipelines promote --without-comparison"
    aliases.promote(NAME, champion, expected=aliases.alias_version(NAME))  # shared champion


def test_lineage_tells_a_passing_candidate_from_a_promoted_version(
    store, trained, champion, monkeypatch
):
    import mlflow

    monkeypatch.setenv("DVC_EXP_NAME", "passing-candidate")
    result = _register(store, trained, LENIENT)
    lineage = mlflow.artifacts.load_dict(f"runs:/{result.run_id}/lineage.json")
    assert lineage["gate"]["passed"] is True and lineage["gate"]["promoted"] is False
    assert result.gate == "passed" and not result.promoted


def test_the_served_model_scores_large_requests_in_chunks_like_keras(store, trained, champion):
    import keras

    from pipelines.registry.raw_model import CHUNK_ROWS

    raw = pd.read_parquet(store / "data" / "test.parquet").drop(columns=["target"])
    rows = raw.to_numpy("float64")[np.random.default_rng(0).integers(0, len(raw), CHUNK_ROWS + 7)]
    served = model_versions.load_pyfunc(f"models:/{NAME}/{champion}").predict(rows)
    model = keras.saving.load_model(store / "good" / "model.keras", safe_mode=True)
    assert served.shape == (CHUNK_ROWS + 7, 2)
    np.testing.assert_allclose(served, model.predict(rows, verbose=0), atol=1e-6)


def test_the_parity_command_checks_a_version_on_raw_rows(store, trained, champion):
    from typer.testing import CliRunner

    from pipelines.cli import app

    args = ["parity", f"models:/{NAME}/{champion}", "--data", str(store / "data" / "test.parquet")]
    ok = CliRunner().invoke(
        app, [*args, "--expected", str(store / "good-eval/test_predictions.npy")]
    )
    assert ok.exit_code == 0, ok.output
    # Evaluated here, after training in this process, the predictions can differ from a fresh
    # process's in the last bit (1.46e-10 on an AMD EPYC); the check's tolerance is 1e-6.
    found = re.search(r"fresh process max \|difference\| (\S+) on 123 raw rows", ok.output)
    assert found and float(found.group(1)) <= 1e-6, ok.output
    bad = CliRunner().invoke(
        app, [*args, "--expected", str(store / "bad-eval/test_predictions.npy")]
    )
    assert bad.exit_code == 1 and "does not reproduce the pipeline's predictions" in bad.output


def test_with_no_gate_settings_a_model_must_still_beat_the_baselines(store, trained, champion):
    result = _register(store, trained, {}, model="bad", evaluation="bad-eval")
    assert not result.promoted
    assert "accuracy 0.4228 beats majority 0.5772" in result.gate_failures
    assert aliases.alias_version(NAME) == champion


def test_an_experiment_registers_a_candidate_and_promote_reruns_the_gate(
    store, trained, champion, monkeypatch
):
    from pipelines.errors import GateRefused
    from pipelines.registry.promote import promote_version

    monkeypatch.setenv("DVC_EXP_NAME", "lr-sweep-1")
    monkeypatch.setenv("DVC_EXP_BASELINE_REV", "abc1234")
    worse = _register(store, trained, LENIENT, model="worse", evaluation="worse-eval")
    good = _register(store, trained, LENIENT)
    monkeypatch.delenv("DVC_EXP_NAME")
    for result in (worse, good):
        assert result.candidate and not result.promoted and result.experiment == "lr-sweep-1"
        tags = model_versions.version_info(NAME, result.version).tags
        assert tags["candidate"] == "true" and tags["dvc_exp_name"] == "lr-sweep-1"
        assert tags["dvc_baseline_rev"] == "abc1234" and "gate" in tags
    assert aliases.alias_version(NAME) == champion  # an experiment never moves the alias

    cfg = parse_config(trained)
    with pytest.raises(GateRefused, match=r"champion: not shown to be within the margin"):
        promote_version(cfg, cfg.model(NAME), worse.version, store / "data")
    assert aliases.alias_version(NAME) == champion
    assert promote_version(cfg, cfg.model(NAME), good.version, store / "data") == champion
    assert aliases.alias_version(NAME) == good.version
    aliases.rollback(NAME)  # the other tests share this champion
    assert aliases.alias_version(NAME) == champion


def test_runs_are_named_by_their_params_and_the_experiment_is_for_training(
    store, trained, champion
):
    import mlflow

    client = mlflow.MlflowClient()
    lenient = client.get_run(_register(store, trained, LENIENT).run_id)
    strict = client.get_run(_register(store, trained, {"min": {"accuracy": 0.6}}).run_id)
    again = client.get_run(_register(store, trained, LENIENT).run_id)
    assert lenient.info.run_name == again.info.run_name != strict.info.run_name
    # params hash, then the training data's digest: the same params on new rows, another name
    assert re.fullmatch(rf"{NAME}-[0-9a-f]{{8}}-d[0-9a-f]{{6}}", lenient.info.run_name)
    experiment = client.get_experiment(lenient.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert connection.ui_url(experiment.name) == (
        f"http://127.0.0.1:5000/#/experiments/{experiment.experiment_id}"
        "?workflowType=machine_learning"
    )
    aliases.promote(NAME, champion, expected=aliases.alias_version(NAME))  # shared champion


def test_the_run_lists_its_dataset_splits_with_the_dvc_digest(store, trained, champion):
    import mlflow

    lock = store / "dvc.lock"
    lock.write_text(
        "stages:\n  split@breast_cancer:\n    outs:\n"
        "    - path: data/train.parquet\n      md5: 0123456789abcdef0123456789abcdef\n"
    )
    try:
        run = mlflow.MlflowClient().get_run(_register(store, trained, LENIENT).run_id)
    finally:
        lock.unlink()
    inputs = {i.tags[0].value: i.dataset for i in run.inputs.dataset_inputs}
    assert set(inputs) == {"training", "validation", "test"}
    assert inputs["training"].name == "breast_cancer-train"
    assert inputs["training"].digest == "0123456789abcdef0123456789abcdef"
    assert json.loads(inputs["test"].source)["uri"].endswith("data/test.parquet")
    aliases.promote(NAME, champion, expected=aliases.alias_version(NAME))  # shared champion


RACE_TRIES = int(os.environ.get("PIPELINES_RACE_TRIES", "2"))  # the bench runs 10


def test_two_registrations_of_one_model_at_once_never_skip_a_comparison(store, trained, champion):
    """Each try starts two registrations of the same model at the same moment. Every promotion
    must have been compared with the version it replaced, one version is champion, and no
    registration in flight is tagged incomplete by the other."""
    import mlflow

    client = mlflow.MlflowClient()
    before = {v.version for v in client.search_model_versions(f"name = '{NAME}'")}
    for _ in range(RACE_TRIES):
        models = [_retrained(store, "good") for _ in range(2)]
        results = _at_once(
            2,
            lambda models=models: _register(
                store, trained, LENIENT, model=models.pop(), same_file=True
            ),
        )
        assert all(not isinstance(r, Exception) for r in results), results
    versions = [
        v for v in client.search_model_versions(f"name = '{NAME}'") if v.version not in before
    ]
    assert len(versions) == 2 * RACE_TRIES
    assert not [v.version for v in versions if v.tags["gate"].startswith("incomplete")]
    # In promotion order, each new champion was compared with the one it replaced.
    promoted = sorted(_promotions(versions), key=lambda pair: int(pair[0]))
    assert promoted, [v.tags for v in versions]
    assert [compared for _, compared in promoted] == [
        str(champion),
        *(version for version, _ in promoted[:-1]),
    ]
    # an alias names one version: the last one promoted
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == promoted[-1][0]
    aliases.promote(NAME, champion, expected=aliases.alias_version(NAME))  # shared champion


def _promotions(versions) -> list[tuple[str, str]]:
    """(version, the champion it was compared with) for each version that became champion."""
    return [
        (str(v.version), v.tags["gate.compared_with"])
        for v in versions
        if v.tags.get("gate") == "passed" and not v.tags.get("gate.promotion")
    ]


def _at_once(n: int, fn) -> list:
    """Run `fn` in `n` threads released together; their results (or errors), in any order."""
    start, results = threading.Barrier(n), []

    def run():
        start.wait()
        try:
            results.append(fn())
        except Exception as err:
            results.append(err)

    threads = [threading.Thread(target=run) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert len(results) == n, "a registration did not finish in 10 minutes"
    return results


def test_the_same_params_on_new_rows_make_a_run_of_another_name(store, trained):
    from pipelines.data.preprocessing import Preprocessing
    from pipelines.registry.runs import data_digest, run_name

    prep = Preprocessing.load(store / "data" / "preprocessing.json")
    grown = json.loads(json.dumps(prep.split))
    grown["digests"]["train"] = "0" * 32  # the weekly retrain: new rows, same params
    params = {"model": {"units": [16]}, "train": {"learning_rate": 0.001}}
    last_week = run_name(NAME, params, None, data_digest(prep))
    this_week = run_name(NAME, params, None, data_digest(replace(prep, split=grown)))
    assert last_week != this_week
    assert last_week.rsplit("-d", 1)[0] == this_week.rsplit("-d", 1)[0]  # same params hash
