"""The retraining flow's own logic: which stages run, and which faults are retried."""

from __future__ import annotations

import pytest

from pipelines.orchestration.dvc_project import set_sources
from pipelines.orchestration.retrain import models_to_run
from pipelines.orchestration.stage_process import StageFailed, _retry_stage


def test_each_model_runs_from_its_first_changed_stage():
    changed = {"evaluate@a", "register@a", "register@b", "split@digits", "train@d"}
    assert models_to_run(changed, ["a", "b", "c", "d"]) == {
        "a": ["evaluate@a", "register@a"],
        "b": ["register@b"],
        "d": ["train@d", "evaluate@d", "register@d"],
    }


def test_a_searched_model_runs_from_its_search_when_the_search_changed():
    changed = {"tune@a", "train@a", "train@b"}
    assert models_to_run(changed, ["a", "b"], searched={"a", "b"}) == {
        "a": ["tune@a", "train@a", "evaluate@a", "register@a"],
        "b": ["train@b", "evaluate@b", "register@b"],
    }


@pytest.mark.parametrize(
    ("tail", "retried"),
    [
        ("sqlite3.OperationalError: database is locked", True),
        ("urllib3: Max retries exceeded with url: /api/2.0/mlflow/runs/create", True),
        ("ERROR: Unable to acquire lock. Most likely another DVC process is running", True),
        ("error: data/raw/x.parquet failed 2 of 127 checks (suite ...)", False),
        ("tabular-dnn: loss became inf at epoch 2", False),
    ],
)
def test_only_transient_faults_are_retried(tail, retried):
    from prefect.states import Failed

    error = StageFailed("train@tabular-dnn", 1, tail, retries=2)
    assert error.transient is retried
    assert _retry_stage(None, None, Failed(data=error)) is retried
    assert ("retried up to 2 time(s)" if retried else "not retried") in str(error)
    assert tail in str(error)


def test_a_failure_message_says_what_happened():
    # register stages are never retried, and their message must not claim otherwise
    locked = StageFailed("register@tabular-dnn", 1, "database is locked", retries=0)
    assert "never retried" in str(locked) and "retried up to" not in str(locked)
    timed_out = StageFailed("train@tabular-dnn", -1, "timed out after 60 s\nEpoch 3/40")
    assert str(timed_out).startswith("stage train@tabular-dnn timed out (")
    assert "timed out after 60 s" in str(timed_out) and "Epoch 3/40" in str(timed_out)


def test_new_sources_are_written_to_params_keeping_comments(tmp_path, repo_root):
    params = tmp_path / "params.yaml"
    params.write_text((repo_root / "params.yaml").read_text())
    set_sources(params, {"breast_cancer": "data/external/new.csv"})
    text = params.read_text()
    assert "source: data/external/new.csv" in text
    assert "# The validate stage" in text, "comments must survive"
    with pytest.raises(KeyError, match=r"datasets\.nope"):
        set_sources(params, {"nope": "x.csv"})


def test_the_deployment_entrypoint_is_the_retraining_flow(repo_root):
    from prefect.flows import Flow, load_flow_from_entrypoint

    from pipelines.orchestration import retrain

    assert isinstance(retrain.retrain, Flow) and isinstance(retrain.train_models, Flow)
    loaded = load_flow_from_entrypoint(
        str(repo_root / "pipelines/orchestration/retrain.py") + ":retrain"
    )
    assert loaded.name == "retrain"
