"""Shared fixtures: the real breast-cancer table and the repo's own suite and params."""

from __future__ import annotations

import os
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
