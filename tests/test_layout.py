"""The tree keeps its architecture: the import contract holds, and each DVC stage lists exactly
the pipeline modules it runs."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml


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
    assert "3 kept, 0 broken" in proc.stdout


@pytest.mark.parametrize(
    "module, line",
    [
        # an upward import: the data wing reaching for the MLflow adapter
        ("pipelines/data/drift.py", "from pipelines.registry import tracking  # noqa"),
        # MLflow outside its adapter
        ("pipelines/model/metrics.py", "import mlflow  # noqa"),
        # Great Expectations outside its adapter
        ("pipelines/registry/gate.py", "import great_expectations  # noqa"),
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


def test_each_stage_lists_exactly_the_modules_it_runs(repo_root):
    """dvc.yaml's `pipelines/` deps are the import graph's (`make deps` rewrites them)."""
    sys.path.insert(0, str(repo_root / "tools"))
    from stage_deps import expected_deps

    stages = yaml.safe_load((repo_root / "dvc.yaml").read_text())["stages"]
    for stage, expected in expected_deps().items():
        listed = {d.split()[0] for d in stages[stage]["do"]["deps"] if d.startswith("pipelines/")}
        assert listed == set(expected), (
            f"{stage}: missing {sorted(set(expected) - listed)}, "
            f"extra {sorted(listed - set(expected))}; run `make deps`"
        )


def test_the_stage_table_is_dvc_yamls_stages_with_their_loops_and_steps(repo_root):
    """One list of stages (pipelines/orchestration/stage_table.py): the same names, in the same
    order, as dvc.yaml, each looping over the params section its foreach reads, each step
    callable."""
    from pipelines.orchestration.stage_table import STAGES

    stages = yaml.safe_load((repo_root / "dvc.yaml").read_text())["stages"]
    assert [s.name for s in STAGES] == list(stages)
    for stage in STAGES:
        foreach = stages[stage.name]["foreach"]
        assert foreach == "${" + stage.loops_over + "}", (stage.name, foreach)
        assert callable(stage.step_function()), stage.step


def test_each_stage_has_a_flow_with_its_functions_parameters():
    """The Prefect flows are built from the stage table and the plain stage functions: one
    flow per stage, named as the table says, taking the function's parameters but `step`."""
    import inspect

    from pipelines.orchestration import flows, stages
    from pipelines.orchestration.stage_table import STAGES

    for stage in STAGES:
        built = flows.stage_flow(stage.name)
        assert built.name == (stage.flow_name or stage.name)
        wanted = [
            p for p in inspect.signature(getattr(stages, stage.name)).parameters if p != "step"
        ]
        assert list(built.parameters.properties) == wanted, stage.name
    assert flows.stage_flow("split").name == "split-normalize"


def test_library_code_logs_and_only_the_entry_points_print(repo_root):
    """`print` only in the CLI, in `console` (which shows the log), in the fresh-process
    scoring script (its output is the answer) and in the stage server's own process (its
    output is its log file); every other module logs."""
    import ast

    allowed = {
        "cli.py",
        "console.py",
        "registry/tracking/fresh_process.py",
        "orchestration/stage_server.py",
    }
    printing = []
    for path in sorted((repo_root / "pipelines").rglob("*.py")):
        rel = path.relative_to(repo_root / "pipelines").as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            is_print = isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print"
            if is_print and rel not in allowed:
                printing.append(f"{rel}:{node.lineno}")
    assert not printing, f"print() in library code (log instead): {printing}"


def test_a_logged_message_shows_as_the_line_print_gave(capsys):
    import logging

    logging.getLogger("pipelines.data.datasets").info("ingested x: 3 rows")
    logging.getLogger("pipelines.orchestration.stages").warning("drift not checked: no reference")
    logging.getLogger("pipelines.orchestration.stages").debug("not shown")
    assert capsys.readouterr().out == (
        "ingested x: 3 rows\nWARNING drift not checked: no reference\n"
    )


def test_inside_a_prefect_run_a_message_goes_to_the_runs_logger_once(capsys, monkeypatch):
    """Prefect's line names the level itself, so the text is the message alone; with no usable
    run logger the line still shows on stdout."""
    import logging

    from pipelines import console

    sent = []

    class RunLogger:
        def log(self, level: int, message: str) -> None:
            sent.append((level, message))

    monkeypatch.setattr(console, "_run_logger", RunLogger)
    logging.getLogger("pipelines.orchestration.stages").warning("drift not checked: no reference")
    assert sent == [(logging.WARNING, "drift not checked: no reference")]
    assert capsys.readouterr().out == ""

    def broken() -> None:
        raise RuntimeError("no API")

    monkeypatch.setattr(console, "_run_logger", broken)
    logging.getLogger("pipelines.data.datasets").info("ingested x: 3 rows")
    assert capsys.readouterr().out == "ingested x: 3 rows\n"
