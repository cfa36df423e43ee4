"""An experiment's `--temp` or queued copy of the project gets the registration records it
lacks (git-ignored, outside DVC's cache) from the project, once, before its first stage runs;
anywhere else nothing is copied."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.config import load_config
from pipelines.orchestration.experiment_copy import MARKER, copy_records_in, project_of_copy

PARAMS = Path("params.yaml")


@pytest.fixture
def project(tmp_path: Path, repo_root: Path) -> tuple[Path, Path, list[Path]]:
    """A project with a record for each model but the last, and a copy as `dvc exp run
    --temp` makes it (under the project's .dvc/tmp/exps), with none."""
    root, copy = tmp_path / "project", tmp_path / "project/.dvc/tmp/exps/standalone/tmpx1"
    for where in (root, copy):
        (where / ".dvc").mkdir(parents=True)
        shutil.copy(repo_root / "params.yaml", where / "params.yaml")
    cfg = load_config(root / PARAMS)
    records = [Path(cfg.paths.models) / name / "registration.json" for name in cfg.models]
    for record in records[:-1]:
        (root / record).parent.mkdir(parents=True)
        (root / record).write_text(f'{{"model": "{record.parent.name}"}}\n')
    return root, copy, records


def test_a_copy_gets_the_records_it_lacks_once(project: tuple[Path, Path, list[Path]]) -> None:
    root, copy, records = project
    own = copy / records[0]
    own.parent.mkdir(parents=True)
    own.write_text("the copy's own\n")
    assert project_of_copy(copy) == root.resolve()

    assert copy_records_in(copy, PARAMS) == records[1:-1]
    assert own.read_text() == "the copy's own\n"  # never overwritten
    for record in records[1:-1]:
        assert (copy / record).read_bytes() == (root / record).read_bytes()
    assert not (copy / records[-1]).exists()  # the project has none

    (copy / records[1]).unlink()  # once per copy: a later stage command copies nothing
    assert copy_records_in(copy, PARAMS) == []
    assert not (copy / records[1]).exists()


def test_outside_a_copy_nothing_is_copied(project: tuple[Path, Path, list[Path]]) -> None:
    root, _, records = project
    assert project_of_copy(root) is None
    (root / records[0]).unlink()
    assert copy_records_in(root, PARAMS) == []
    assert not (root / records[0]).exists()
    assert not (root / ".dvc" / "tmp" / MARKER).exists()


def test_a_stage_command_in_a_copy_copies_them_first(
    project: tuple[Path, Path, list[Path]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Even a stage that then fails on its own input: the records are in before any work."""
    _, copy, records = project
    monkeypatch.chdir(copy)
    monkeypatch.setenv("PIPELINES_PREFECT", "off")
    ran = CliRunner().invoke(app, ["ingest", "nope", "--out", "raw.parquet"])
    assert ran.exit_code == 1
    assert f"copied the registration.json of {len(records) - 1} models" in ran.output
    assert "no such dataset" in ran.output
    assert all((copy / record).is_file() for record in records[:-1])
