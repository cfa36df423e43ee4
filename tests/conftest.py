"""Shared fixtures: the real breast-cancer table, the repo's own suite and params, and a temp
project with its own MLflow store for a test module."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import yaml

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def _messages_shown() -> None:
    """The library's messages on standard output, as the CLI shows them."""
    from pipelines.console import show_messages

    show_messages()


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def raw_params() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


@pytest.fixture(scope="session")
def _breast_cancer() -> pd.DataFrame:
    from pipelines.data.datasets import load_source

    return load_source("sklearn:breast_cancer")


@pytest.fixture
def breast_cancer(_breast_cancer: pd.DataFrame) -> pd.DataFrame:
    """A fresh copy per test, so a test can damage it freely."""
    return _breast_cancer.copy()


@pytest.fixture(scope="module")
def store(
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
    _breast_cancer: pd.DataFrame,
    raw_params: dict,
) -> Iterator[Path]:
    """A temp project folder for one test module, its working directory: its own SQLite MLflow
    store (MLflow keeps artifacts under ./mlruns), and the breast-cancer table (`raw.parquet`)
    split into `data/` by the default params."""
    import mlflow

    from pipelines.config import parse_config
    from pipelines.data.preprocessing import split_and_fit

    root = tmp_path_factory.mktemp(request.module.__name__.rpartition(".")[2])
    raw = root / "raw.parquet"
    _breast_cancer.to_parquet(raw, index=False)
    dataset = parse_config(raw_params).dataset("breast_cancer")
    split_and_fit("breast_cancer", raw, dataset, 42, root / "data")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        uri = f"sqlite:///{root / 'mlflow.db'}"
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mlflow.set_tracking_uri(uri)  # this module's store, not the one a module before set
        yield root


@pytest.fixture(scope="session")
def suite_path() -> Path:
    return REPO / "gx" / "expectations" / "breast_cancer.json"


# Test files that train a model or start a server (Prefect, MLflow, moto, PostgreSQL): their
# tests are `integration` unless marked `e2e` (the real pipeline, DVC and all). Every other
# test is `unit`: no model trained, no server started; `make test-unit` runs those.
INTEGRATION_FILES = {
    "test_bad_data.py",
    "test_bad_params.py",
    "test_bad_requests.py",
    "test_builders.py",
    "test_faults.py",
    "test_local_server.py",
    "test_registry.py",
    "test_search.py",
    "test_sharded.py",
    "test_stage_server.py",
    "test_storage.py",
}


def pytest_itemcollected(item) -> None:
    """Each test's kind, `unit` or `integration`, unless it is marked `e2e` (before `-m`
    selects)."""
    if item.get_closest_marker("e2e") is None:
        kind = "integration" if item.path.name in INTEGRATION_FILES else "unit"
        item.add_marker(getattr(pytest.mark, kind))


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list) -> None:
    """The shared end-to-end project's module first, keeping the shuffled order otherwise:
    with `make test`'s two processes it starts at once on one of them (it is the longest file)
    while the other files share the other."""
    items.sort(key=lambda item: item.nodeid.split("::")[0] != "tests/test_e2e.py")
