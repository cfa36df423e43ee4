"""The quality gate, alone and with a real (SQLite) MLflow registry behind it."""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest

from pipelines.config import GateConfig, parse_config
from pipelines.gate import apply_gate

TEST = {"accuracy": 0.97, "roc_auc": 0.99, "f1": 0.975, "log_loss": 0.09}
BASELINE = {"majority": {"accuracy": 0.63, "roc_auc": 0.5, "f1": 0.77, "log_loss": 0.66}}


def test_gate_passes_when_every_check_passes():
    gate = GateConfig(
        min={"accuracy": 0.95, "roc_auc": 0.97},
        max={"log_loss": 0.3},
        beat_baseline=["accuracy", "f1", "log_loss"],
    )
    verdict = apply_gate(gate, TEST, BASELINE)
    assert verdict.passed and not verdict.failures
    assert len(verdict.checks) == 6


def test_gate_fails_on_a_floor_and_says_by_how_much():
    verdict = apply_gate(GateConfig(min={"accuracy": 0.99}), TEST, BASELINE)
    assert not verdict.passed
    assert verdict.failures == ["accuracy 0.9700 >= 0.99"]
    assert "FAILED" in verdict.summary()


def test_gate_fails_on_a_ceiling():
    assert not apply_gate(GateConfig(max={"log_loss": 0.05}), TEST, BASELINE).passed


def test_gate_fails_when_the_baseline_is_not_beaten():
    weak = {**TEST, "accuracy": 0.60, "log_loss": 0.7}
    verdict = apply_gate(GateConfig(beat_baseline=["accuracy", "log_loss"]), weak, BASELINE)
    assert len(verdict.failures) == 2
    assert verdict.failures[0] == "accuracy 0.6000 beats majority 0.6300"


def test_a_forecast_must_beat_every_baseline():
    test = {"mae": 0.30, "rmse": 0.40, "mape": 0.08}
    baselines = {
        "persistence": {"mae": 0.40, "rmse": 0.51, "mape": 0.11},
        "seasonal_naive": {"mae": 0.25, "rmse": 1.84, "mape": 0.45},
    }
    verdict = apply_gate(GateConfig(beat_baseline=["mae", "rmse"]), test, baselines)
    assert verdict.failures == ["mae 0.3000 beats seasonal_naive 0.2500"]
    assert len(verdict.checks) == 4


def test_a_metric_the_task_does_not_compute_fails_clearly():
    verdict = apply_gate(GateConfig(min={"accuracy": 0.9}), {"mae": 0.3}, {})
    assert verdict.failures == ["accuracy is not computed for this task (has: mae)"]


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory, _breast_cancer, raw_params):
    """A quickly trained tabular model with the files the register stage reads."""
    from pipelines.evaluation import evaluate_task
    from pipelines.preprocessing import split_and_fit
    from pipelines.training import train_task

    root = tmp_path_factory.mktemp("register")
    raw = root / "raw.parquet"
    _breast_cancer.to_parquet(raw, index=False)
    params = copy.deepcopy(raw_params)
    params["tasks"]["tabular-dnn"]["train"].update(max_epochs=25, learning_rate=0.01)
    cfg = parse_config(params)
    split_and_fit("breast_cancer", raw, cfg.dataset("breast_cancer"), 42, root / "data")
    train_task(cfg, "tabular-dnn", root / "data", root / "model")
    evaluate_task("tabular-dnn", root / "model" / "model.keras", root / "data", root / "eval")
    docs = root / "docs"
    docs.mkdir()
    (docs / "index.html").write_text("<html>docs</html>")
    return root, params


def _register(artifacts, gate: dict, tmp_path, monkeypatch):
    from pipelines.registration import register_task

    root, params = artifacts
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    params = copy.deepcopy(params)
    params["tasks"]["tabular-dnn"]["gate"] = gate
    return register_task(
        parse_config(params),
        "tabular-dnn",
        model_dir=root / "model",
        eval_dir=root / "eval",
        data_dir=root / "data",
        raw_data=root / "raw.parquet",
        docs_dir=root / "docs",
        out=tmp_path / "registration.json",
    )


def test_failed_gate_logs_the_run_but_registers_nothing(artifacts, tmp_path, monkeypatch):
    import mlflow

    result = _register(artifacts, {"min": {"accuracy": 0.9999}}, tmp_path, monkeypatch)
    assert not result.registered and not result.gate_passed
    assert result.gate_failures and result.gate_failures[0].startswith("accuracy")
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert client.search_registered_models() == []
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["gate"] == "failed"
    assert json.loads((tmp_path / "registration.json").read_text())["registered"] is False


def test_passing_gate_registers_a_champion_that_predicts_on_raw_rows(
    artifacts, tmp_path, monkeypatch
):
    import mlflow

    root, _ = artifacts
    gate = {"min": {"accuracy": 0.8}, "beat_baseline": ["accuracy", "log_loss"]}
    result = _register(artifacts, gate, tmp_path, monkeypatch)
    assert result.registered and result.version == "1"
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    version = client.get_model_version_by_alias("tabular-dnn", "champion")
    assert str(version.version) == "1"
    run = client.get_run(result.run_id)
    for tag in ("git_commit", "data_md5", "seed", "task", "family", "dataset"):
        assert tag in run.data.tags
    assert run.data.tags["task"] == "tabular"
    assert {"test_accuracy", "baseline_majority_accuracy", "best_epoch", "stopped_epoch"} <= set(
        run.data.metrics
    )
    history = client.get_metric_history(result.run_id, "val_loss")
    assert len(history) == int(run.data.metrics["stopped_epoch"])
    artifacts_logged = {a.path for a in client.list_artifacts(result.run_id)}
    assert {"evaluation", "training", "data_docs", "preprocessing"} <= artifacts_logged

    model = mlflow.pyfunc.load_model("models:/tabular-dnn@champion")
    raw = pd.read_parquet(root / "data" / "test.parquet")
    x = raw[model.metadata.metadata["features"]].to_numpy("float64")
    expected = np.load(root / "eval" / "test_predictions.npy")
    np.testing.assert_allclose(model.predict(x), expected, atol=1e-6)
    assert model.metadata.metadata["classes"] == [0, 1]
