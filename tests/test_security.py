"""Security defaults: safe-mode model loading, local-only servers, no secrets in the repo."""

from __future__ import annotations

import contextlib
import inspect
import re
import shlex
import subprocess

import pytest

from pipelines import cli
from pipelines.orchestration import prefect_server


def test_a_model_with_a_lambda_layer_is_refused(tmp_path):
    import keras

    from pipelines.model.scoring import load_keras_model

    inputs = keras.Input(shape=(3,))
    outputs = keras.layers.Lambda(lambda x: x * 2)(inputs)
    path = tmp_path / "lambda.keras"
    keras.Model(inputs, outputs).save(path)
    with pytest.raises(ValueError, match="safe_mode"):
        load_keras_model(path)


def test_the_pipeline_never_unpickles_or_disables_safe_mode(repo_root):
    sources = {p: p.read_text() for p in (repo_root / "pipelines").rglob("*.py")}
    for path, text in sources.items():
        assert "safe_mode=False" not in text, path
        assert "import pickle" not in text and "cloudpickle" not in text, path
        assert "allow_pickle=True" not in text, path
    calls = [
        (path.name, call)
        for path, text in sources.items()
        for call in re.findall(r"keras\.saving\.load_model\([^)]*\)", text)
    ]
    assert {name for name, _ in calls} >= {"scoring.py", "raw_model.py"}
    assert all("safe_mode=True" in call for _, call in calls), calls


def test_servers_bind_to_localhost_by_default(repo_root, monkeypatch):
    monkeypatch.delenv("PIPELINES_PREFECT_PORT", raising=False)
    assert prefect_server.local_api_url() == "http://127.0.0.1:4200/api"
    assert inspect.signature(cli.serve).parameters["host"].default == "127.0.0.1"
    # What `make ui` would run (make -n prints it without running it).
    dry = subprocess.run(
        ["make", "-n", "ui"], cwd=repo_root, capture_output=True, text=True, check=True
    )
    (ui,) = [shlex.split(line) for line in dry.stdout.splitlines() if line.startswith("mlflow ui")]
    assert ui[ui.index("-h") + 1] == "127.0.0.1", ui


_SECRET = re.compile(
    r"(AKIA[0-9A-Z]{16}|aws_secret_access_key|secret_access_key\s*=|password\s*[:=]\s*\S+"
    r"|BEGIN (RSA|OPENSSH) PRIVATE KEY|ghp_[0-9A-Za-z]{30,})",
    re.IGNORECASE,
)


def test_no_credentials_in_tracked_files(repo_root):
    files = subprocess.run(
        ["git", "ls-files"], cwd=repo_root, capture_output=True, text=True, check=True
    ).stdout.split()
    assert "params.yaml" in files
    hits = [
        f
        for f in files
        if (repo_root / f).is_file()
        and f != "tests/test_security.py"
        and _SECRET.search((repo_root / f).read_text(errors="ignore"))
    ]
    assert hits == []
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", ".dvc/config.local"], cwd=repo_root, check=False
    )
    assert ignored.returncode == 0, ".dvc/config.local (remote credentials) must be ignored"


def test_the_stored_wrapper_names_the_keras_artifact_as_the_adapter_does(repo_root):
    # raw_model.py must not import the package (it is stored with each version), so it spells
    # the artifact name itself; read it without importing it.
    import ast

    from pipelines.registry.tracking import model_versions

    tree = ast.parse(model_versions.RAW_MODEL_CODE.read_text())
    (value,) = [
        node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign) and node.targets[0].id == "KERAS_ARTIFACT"
    ]
    assert value == model_versions.KERAS_ARTIFACT


def test_the_stored_wrapper_defines_without_mlflow_type_hint_warnings():
    import runpy
    import warnings

    from pipelines.registry.tracking import model_versions

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        runpy.run_path(str(model_versions.RAW_MODEL_CODE))
    assert not [w for w in seen if "type hints" in str(w.message)], [str(w.message) for w in seen]


def _descendants() -> set[int]:
    """The processes this test process started, and theirs (from /proc)."""
    import os
    from pathlib import Path

    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = set(), {os.getpid()}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _command_lines_while(work) -> list[str]:
    """Run `work()` in a thread and read the command line of every process it starts, as any
    local user can (`ps`, /proc/<pid>/cmdline), until it returns."""
    import threading
    import time
    from pathlib import Path

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    seen: list[str] = []
    while thread.is_alive():
        for pid in _descendants():
            with contextlib.suppress(OSError):
                seen.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
        time.sleep(0.05)
    thread.join()
    return seen


def test_the_fresh_process_scorer_never_shows_the_tracking_uri(monkeypatch, tmp_path):
    import numpy as np

    from pipelines.registry.tracking.fresh_process import score_in_fresh_process

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://scorer:s3cret-pw@127.0.0.1:9")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    np.save(tmp_path / "x.npy", np.zeros((1, 3)))
    answers: list = []
    seen = _command_lines_while(
        lambda: answers.extend(score_in_fresh_process([("models:/m/1", tmp_path / "x.npy")]))
    )
    assert any("python" in line for line in seen), seen  # the scorer ran and was seen
    assert isinstance(answers[0], str)  # the server is not there: an error, named
    assert not [line for line in seen if "s3cret" in line], seen


def test_the_dvc_remote_url_never_shows_in_a_command_line(monkeypatch, tmp_path):
    from pipelines.environment import env_with_venv, executable
    from pipelines.orchestration.dvc_project import REMOTE_ENV, push_data

    root = tmp_path / "project"
    root.mkdir()
    env = env_with_venv()
    subprocess.run(["git", "init", "-q"], cwd=root, check=True, env=env)
    subprocess.run([executable("dvc"), "init", "-q"], cwd=root, check=True, env=env)
    remote = tmp_path / "remote-s3cret-token"
    monkeypatch.setenv(REMOTE_ENV, str(remote))
    said: list[str] = []
    seen = _command_lines_while(lambda: said.append(push_data(root)))
    assert any("dvc" in line and "push" in line for line in seen), seen
    assert not [line for line in seen if "s3cret" in line], seen
    assert "pipelines-remote" in (root / ".dvc" / "config.local").read_text()
    assert "s3cret" not in (root / ".dvc" / "config").read_text()  # never committed
