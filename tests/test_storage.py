"""Storage by environment only: the same registration against a real `mlflow server` with a
database backend and proxied artifacts on localhost, instead of the embedded SQLite file."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.run.local_server import free_port, wait_until_answers

NAME = "tabular-dnn"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow-server")
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
        yield url, root
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()


def test_registration_against_an_mlflow_server(server, tmp_path, _breast_cancer, raw_params):
    import mlflow

    from pipelines.config import parse_config
    from pipelines.data.preprocessing import split_and_fit
    from pipelines.model.evaluation import evaluate_task
    from pipelines.model.training import train_task
    from pipelines.registry.registration import register_task

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
        split_and_fit("breast_cancer", raw, cfg.dataset("breast_cancer"), 42, tmp_path / "data")
        train_task(cfg, NAME, tmp_path / "data", tmp_path / "model")
        evaluate_task(NAME, tmp_path / "model" / "model.keras", tmp_path / "data", tmp_path / "ev")
        result = register_task(
            cfg,
            NAME,
            model_dir=tmp_path / "model",
            eval_dir=tmp_path / "ev",
            data_dir=tmp_path / "data",
            raw_data=raw,
            docs_dir=tmp_path / "docs",
            out=tmp_path / "registration.json",
        )
        assert result.promoted, result.gate_failures  # fresh-process parity went via the server
        client = mlflow.MlflowClient(url)
        assert client.get_model_version_by_alias(NAME, "champion").version == result.version
        run = client.get_run(result.run_id)
        assert run.info.artifact_uri.startswith("mlflow-artifacts:")
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()
    assert list((server_root / "artifacts").rglob("model.keras")), "artifacts live on the server"
