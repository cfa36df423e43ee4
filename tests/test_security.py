"""Security defaults: safe-mode model loading, local-only servers, no secrets in the repo."""

from __future__ import annotations

import inspect
import re
import subprocess

import pytest

from pipelines import cli
from pipelines.run import orchestration


def test_a_model_with_a_lambda_layer_is_refused(tmp_path):
    import keras

    from pipelines.model.evaluation import load_keras_model

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
    assert {name for name, _ in calls} >= {"evaluation.py", "raw_model.py"}
    assert all("safe_mode=True" in call for _, call in calls), calls


def test_servers_bind_to_localhost_by_default(repo_root, monkeypatch):
    monkeypatch.delenv("PIPELINES_PREFECT_PORT", raising=False)
    assert orchestration.local_api_url() == "http://127.0.0.1:4200/api"
    assert inspect.signature(cli.serve).parameters["host"].default == "127.0.0.1"
    makefile = (repo_root / "Makefile").read_text()
    assert "mlflow ui --backend-store-uri" in makefile
    assert re.search(r"mlflow ui .*-h 127\.0\.0\.1", makefile)


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
