"""Storage by environment only: the same registration against a real `mlflow server` with a
database backend and proxied artifacts on localhost, instead of the embedded SQLite file."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from pipelines.orchestration.local_server import free_port, wait_until_answers
from tests.chain import split_train_evaluate_register

NAME = "tabular-dnn"


@contextmanager
def mlflow_server(root: Path) -> Iterator[str]:
    """A real `mlflow server` (SQLite backend, proxied artifacts) under `root`; its URL."""
    port = free_port()
    log = open(root / "server.log", "wb")  # noqa: SIM115 - outlives this block
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("mlflow")),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{root / 'server.db'}",
            "--artifacts-destination",
            str(root / "artifacts"),
        ],
        cwd=root,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_answers(f"{url}/health", proc, 120, root / "server.log")
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow-server")
    with mlflow_server(root) as url:
        yield url, root


def test_registration_against_an_mlflow_server(server, tmp_path, _breast_cancer, raw_params):
    import mlflow

    from pipelines.config import parse_config

    url, server_root = server
    params = copy.deepcopy(raw_params)
    params["models"][NAME]["train"].update(max_epochs=5, learning_rate=0.01)
    params["models"][NAME]["gate"] = {}
    cfg = parse_config(params)
    raw = tmp_path / "raw.parquet"
    _breast_cancer.to_parquet(raw, index=False)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "index.html").write_text("<html>docs</html>")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        mp.setenv("MLFLOW_TRACKING_URI", url)  # the only change: an environment variable
        result = split_train_evaluate_register(cfg, NAME, tmp_path, raw, tmp_path / "docs")
        assert result.promoted, result.gate_failures  # fresh-process parity went via the server
        client = mlflow.MlflowClient(url)
        assert client.get_model_version_by_alias(NAME, "champion").version == result.version
        run = client.get_run(result.run_id)
        assert run.info.artifact_uri.startswith("mlflow-artifacts:")
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()
    assert list((server_root / "artifacts").rglob("model.keras")), "artifacts live on the server"


@pytest.mark.parametrize("on_drift", ["fail", "warn"])
def test_validate_with_the_store_down_fails_naming_it_never_passes_silently(
    tmp_path, repo_root, _breast_cancer, raw_params, on_drift
):
    """The drift check needs the champion's reference from the store. A store that is down is
    not "no champion yet": validation fails naming the store (or, under `on_drift: warn`,
    passes with a warning that names it)."""
    import yaml

    params = copy.deepcopy(raw_params)
    params["validation"]["drift"]["on_drift"] = on_drift
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _breast_cancer.to_parquet(tmp_path / "raw.parquet", index=False)
    with mlflow_server(tmp_path) as url:
        pass  # started, answered, and stopped: nothing listens at `url` any more
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": url,
        "PIPELINES_PREFECT": "off",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
    }
    suite = repo_root / "gx" / "expectations" / "breast_cancer.json"
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "pipelines.cli", "validate", "breast_cancer"),
            *("--data", "raw.parquet", "--suite", str(suite), "--report-dir", "docs"),
            *("--params", "params.yaml"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = proc.stdout + proc.stderr
    assert f"the MLflow store {url} failed" in out, out
    assert "Traceback" not in out, out
    if on_drift == "fail":
        assert proc.returncode == 1, out
        assert "error: raw.parquet: drift cannot be checked" in proc.stderr, out
        assert "validated" not in proc.stdout
    else:
        assert proc.returncode == 0, out
        assert "WARNING drift not checked" in proc.stdout, out
        assert "is not recorded in MLflow" in proc.stdout, out
