"""The tree keeps its architecture: the import contract holds, and each DVC stage lists exactly
the pipeline modules it runs."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

# The step modules each DVC stage runs (see pipelines/run/stages.py), and files a stage uses
# without importing them: the raw-input wrapper is stored as code with every version.
STAGE_ROOTS = {
    "ingest": ["pipelines.data.datasets"],
    "validate": ["pipelines.data.validation", "pipelines.registry.tracking"],
    "split": ["pipelines.data.preprocessing"],
    "tune": ["pipelines.run.tuning"],
    "train": ["pipelines.model.training", "pipelines.registry.runs"],
    "evaluate": ["pipelines.model.evaluation", "pipelines.registry.runs"],
    "register": ["pipelines.registry.registration"],
}
STORED_AS_CODE = {"register": {"pipelines/registry/raw_model.py"}}
WINGS = ("pipelines.data", "pipelines.model", "pipelines.registry", "pipelines.run")


def _lint_imports(root: Path) -> subprocess.CompletedProcess:
    lint = Path(sys.executable).with_name("lint-imports")
    return subprocess.run(
        [str(lint), "--config", str(root / "pyproject.toml"), "--no-cache"],
        cwd=root,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(root), "PATH": str(Path(sys.executable).parent)},
    )


def test_the_import_contract_holds(repo_root):
    proc = _lint_imports(repo_root)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "2 kept, 0 broken" in proc.stdout


@pytest.mark.parametrize(
    "module, line",
    [
        # an upward import: the data wing reaching for the MLflow adapter
        ("pipelines/data/drift.py", "from pipelines.registry import tracking  # noqa"),
        # a cycle inside one wing: streaming back to datasets, which imports streaming
        ("pipelines/data/streaming.py", "from pipelines.data import datasets  # noqa"),
    ],
)
def test_the_contract_fails_on_an_upward_import_or_a_cycle(repo_root, tmp_path, module, line):
    shutil.copytree(repo_root / "pipelines", tmp_path / "pipelines")
    shutil.copy(repo_root / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / module
    target.write_text(target.read_text() + f"\n{line}\n")
    proc = _lint_imports(tmp_path)
    assert proc.returncode != 0
    assert "BROKEN" in proc.stdout


def _runs(graph, roots: list[str]) -> set[str]:
    modules = set(roots)
    for root in roots:
        modules |= graph.find_upstream_modules(root)
    return {m.replace(".", "/") + ".py" for m in modules if m != "pipelines" and m not in WINGS}


def test_each_stage_lists_exactly_the_modules_it_runs(repo_root):
    import grimp

    graph = grimp.build_graph("pipelines", cache_dir=None)
    stages = yaml.safe_load((repo_root / "dvc.yaml").read_text())["stages"]
    for stage, roots in STAGE_ROOTS.items():
        listed = {d.split()[0] for d in stages[stage]["do"]["deps"] if d.startswith("pipelines/")}
        expected = _runs(graph, roots) | STORED_AS_CODE.get(stage, set())
        assert listed == expected, (
            f"{stage}: missing {sorted(expected - listed)}, extra {sorted(listed - expected)}"
        )
