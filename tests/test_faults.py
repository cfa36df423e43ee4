"""Training faults, for real: a diverging run is stopped and recorded as FAILED, and a process
killed mid-way leaves neither a half-written model nor an MLflow run stuck in RUNNING."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pipelines.registry.tracking import model_versions, run_lifecycle

NAME = "tabular-dnn"


@pytest.fixture(scope="module", autouse=True)
def _plain_stages(store):
    """The stage functions as they are, without Prefect, in this module's store (conftest)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PIPELINES_PREFECT", "off")
        yield


def _params(store: Path, raw_params: dict, name: str, **train) -> Path:
    params = copy.deepcopy(raw_params)
    params["models"][NAME]["train"].update(train)
    if train.get("optimizer") == "sgd":
        params["models"][NAME]["model"]["activation"] = "relu"
    path = store / f"{name}.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "pipelines.cli", *args]


def test_a_diverging_run_stops_is_marked_failed_and_nothing_is_saved(store, raw_params):
    import mlflow

    params = _params(store, raw_params, "huge-lr", optimizer="sgd", learning_rate=10.0)
    out = store / "diverged"
    proc = subprocess.run(
        _cli("train", NAME, "--data-dir", "data", "--out-dir", str(out), "--params", str(params)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Invalid loss, terminating training" in proc.stdout  # Keras' TerminateOnNaN
    assert "training stopped (TerminateOnNaN)" in proc.stderr
    assert "learning_rate=10.0" in proc.stderr
    assert not (out / "model.keras").exists()
    assert not list(out.glob("*.tmp*")) if out.exists() else True
    # The module's other tests log to the same store: look at training runs only.
    runs = mlflow.search_runs(
        search_all_experiments=True, filter_string="tags.failure LIKE 'diverged%'"
    )
    assert len(runs) == 1
    run = runs.iloc[0]
    assert run["status"] == "FAILED"
    assert run["tags.failure"].startswith("diverged: loss became")
    assert run["params.train.learning_rate"] == "10.0"
    registered = mlflow.MlflowClient().search_registered_models()
    assert [m.name for m in registered if m.name == NAME] == []


def _live_run(experiment: str, timeout: float = 60.0):
    """The RUNNING run of the training under way, once it holds an epoch's loss."""
    import mlflow

    client = mlflow.MlflowClient()
    found = client.get_experiment_by_name(experiment)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for run in client.search_runs([found.experiment_id], "attributes.status = 'RUNNING'"):
            if run.data.tags.get("model_name") == NAME and "loss" in run.data.metrics:
                return run
        time.sleep(0.5)
    raise AssertionError("no RUNNING run with an epoch's loss appeared while training")


def test_a_training_logs_its_epochs_live_and_a_killed_one_leaves_no_model_or_open_run(
    store, raw_params
):
    """Through the installed `pipelines` command (its console script), as users run it."""
    import mlflow

    params = _params(store, raw_params, "long", max_epochs=400, patience=400)
    out = store / "killed"
    installed = str(Path(sys.executable).with_name("pipelines"))
    args = ["train", NAME, "--data-dir", "data", "--out-dir", str(out), "--params", str(params)]
    proc = subprocess.Popen(
        [installed, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("Epoch 4/"):
            break
    assert any(line.startswith("Epoch 4/") for line in seen), "".join(seen[-20:])
    # While the stage still runs, its MLflow run is open and the curves grow, one step per epoch.
    run = _live_run(raw_params["base"]["experiment"])
    steps = mlflow.MlflowClient().get_metric_history(run.info.run_id, "val_loss")
    assert proc.poll() is None and len(steps) >= 1
    assert [m.step for m in steps] == list(range(1, len(steps) + 1))
    assert run.data.params["train.max_epochs"] == "400"
    assert {i.dataset.name for i in mlflow.get_run(run.info.run_id).inputs.dataset_inputs} == {
        "breast_cancer-train",
        "breast_cancer-validation",
        "breast_cancer-test",
    }
    proc.send_signal(signal.SIGTERM)  # what a stopped `dvc repro` or a cancelled flow sends
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    assert _status(run.info.run_id) == "FAILED"
    assert not out.exists() or not any(out.iterdir()), sorted(out.iterdir())


_HOLD_A_RUN = """
import os, signal, sys, time
import mlflow
from pipelines.registry.tracking import connection, model_versions, run_lifecycle
from pipelines.cli import _exit_on_sigterm
signal.signal(signal.SIGTERM, _exit_on_sigterm)
mlflow.set_tracking_uri(connection.tracking_uri())
mlflow.set_experiment("faults")
with mlflow.start_run(tags=run_lifecycle.process_tags()) as run:
    print(run.info.run_id, flush=True)
    time.sleep(120)
"""


def _start_holder() -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-c", _HOLD_A_RUN], stdout=subprocess.PIPE, text=True)
    run_id = proc.stdout.readline().strip()
    assert run_id, "the helper process did not start its run"
    return proc, run_id


def _status(run_id: str) -> str:
    import mlflow

    return mlflow.MlflowClient().get_run(run_id).info.status


def test_sigterm_ends_the_open_run_as_failed(store):
    proc, run_id = _start_holder()
    assert _status(run_id) == "RUNNING"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    assert _status(run_id) == "FAILED"


def test_a_run_whose_process_was_killed_is_closed_by_the_next_one(store):
    import mlflow

    proc, run_id = _start_holder()
    os.kill(proc.pid, signal.SIGKILL)  # no chance to clean up
    proc.wait(timeout=30)
    time.sleep(0.2)
    assert _status(run_id) == "RUNNING"
    alive, alive_id = _start_holder()  # a live run must be left alone
    try:
        assert run_lifecycle.close_abandoned_runs("faults") == [run_id]
        assert _status(run_id) == "FAILED"
        assert (
            "ended without closing this run"
            in mlflow.MlflowClient().get_run(run_id).data.tags["failure"]
        )
        assert _status(alive_id) == "RUNNING"
    finally:
        alive.kill()
        alive.wait(timeout=30)


# A stage that opens a run the way every stage does (`open_run`: process tags and a lease it
# renews) and then works until it is killed.
_LEASED_RUN = """
import time
from pipelines.registry.tracking import run_lifecycle
with run_lifecycle.open_run("faults-hosts", run_name="other-host") as run_id:
    print(run_id, flush=True)
    time.sleep(120)
"""


def _on_another_host(code: str, env: dict) -> subprocess.Popen:
    """`code` in a process with its own host name (a UTS namespace), as a pod or container
    on another machine would be."""
    return subprocess.Popen(
        [
            "unshare",
            "--uts",
            "sh",
            "-c",
            'hostname pipelines-other-host && exec "$0" -c "$1"',
            sys.executable,
            code,
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_a_run_of_a_dead_container_is_closed_by_a_stage_on_another_host(store):
    """A stage on another host (its own host name) is killed outright, as a restarted pod is:
    its pid means nothing here, but its lease stops being renewed, and once it has expired the
    next stage here closes the run as FAILED. A live run on the other host keeps its lease."""
    import mlflow

    env = {**os.environ, "PIPELINES_RUN_LEASE_S": "3"}
    dead = _on_another_host(_LEASED_RUN, env)
    dead_id = dead.stdout.readline().strip()
    alive = _on_another_host(_LEASED_RUN, env)
    alive_id = alive.stdout.readline().strip()
    try:
        assert dead_id and alive_id
        tags = mlflow.MlflowClient().get_run(dead_id).data.tags
        assert tags["pipelines.host"] == "pipelines-other-host" != os.uname().nodename
        os.kill(dead.pid, signal.SIGKILL)
        dead.wait(timeout=30)
        time.sleep(5)  # past the 3 s lease; the live one renews every second
        assert _status(dead_id) == "RUNNING"
        assert run_lifecycle.close_abandoned_runs("faults-hosts") == [dead_id]
        assert _status(dead_id) == "FAILED"
        failure = mlflow.MlflowClient().get_run(dead_id).data.tags["failure"]
        assert "on pipelines-other-host stopped renewing its lease" in failure, failure
        assert _status(alive_id) == "RUNNING"
    finally:
        for proc in (dead, alive):
            proc.kill()
            proc.wait(timeout=30)


def test_the_mirrored_strategy_trains_on_cpu(store, raw_params):
    from pipelines.config import parse_config
    from pipelines.model.scoring import load_keras_model
    from pipelines.model.training import train_model

    params = copy.deepcopy(raw_params)
    params["models"][NAME]["train"].update(distribute="mirrored", max_epochs=3)
    cfg = parse_config(params)
    summary = train_model(cfg, cfg.model(NAME), store / "data", store / "mirrored")
    assert summary.stopped_epoch == 3
    model = load_keras_model(store / "mirrored" / "model.keras")
    assert model.output_shape == (None, 2)


def test_a_version_left_without_a_gate_verdict_is_tagged_incomplete(store):
    import mlflow

    client = mlflow.MlflowClient()
    client.create_registered_model("half-registered")
    checked = client.create_model_version(
        "half-registered", source=str(store), tags={"gate": "passed"}
    )
    stopped = client.create_model_version("half-registered", source=str(store))
    assert model_versions.mark_incomplete_versions("half-registered") == [str(stopped.version)]
    tags = client.get_model_version("half-registered", stopped.version).tags
    assert tags["gate"].startswith("incomplete")
    assert client.get_model_version("half-registered", checked.version).tags["gate"] == "passed"
    assert model_versions.mark_incomplete_versions("no-such-model") == []
