"""The tree keeps its architecture: the import contract holds, and each DVC stage depends on
exactly the pipeline modules it runs (through its code file, `.stage-code/<stage>.md5`)."""

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


def test_each_stage_depends_on_exactly_the_modules_it_runs_through_its_code_file(repo_root):
    """Each stage's code file lists the files the import graph (grimp's) says its step runs,
    with their current MD5s; the stage depends on that file and on no module directly, and the
    `code` stage that writes the files depends on every module listed and on its own code
    (`make deps`)."""
    sys.path.insert(0, str(repo_root / "tools"))
    from stage_deps import expected_deps

    from pipelines.orchestration.stage_code import digest, stage_files

    stages = yaml.safe_load((repo_root / "dvc.yaml").read_text())["stages"]
    expected = expected_deps()
    assert stage_files(repo_root) == expected
    for stage, files in expected.items():
        deps = stages[stage]["do"]["deps"]
        assert f".stage-code/{stage}.md5" in deps, stage
        assert not [d for d in deps if d.startswith("pipelines/")], stage
        written = (repo_root / ".stage-code" / f"{stage}.md5").read_text()
        assert written == digest(repo_root, files), f"{stage}: run `dvc repro code`"
    code = stages["code"]
    own = expected_deps({"code": ["pipelines.orchestration.stage_code"]})["code"]
    assert "pipelines/orchestration/stage_code.py" in own
    assert set(code["deps"]) == {f for files in [*expected.values(), own] for f in files}
    assert [next(iter(out)) for out in code["outs"]] == [
        f".stage-code/{stage}.md5" for stage in expected
    ]


def test_a_module_import_inside_a_function_counts_and_a_namespace_package_does_not(tmp_path):
    """The code file reads imports from the source: a lazy import in a function is a dependency,
    relative imports resolve, and `from pipelines.data import x` names the module x."""
    from pipelines.orchestration.stage_code import imported_modules

    package = tmp_path / "pipelines"
    (package / "data").mkdir(parents=True)
    for path in ("__init__.py", "data/__init__.py", "errors.py", "data/extra.py"):
        (package / path).write_text("")
    (package / "data" / "step.py").write_text(
        "from pipelines.data import extra\n"
        "def run():\n"
        "    from ..errors import KnownFailure\n"
        "    import numpy\n"
    )
    assert imported_modules(tmp_path, "pipelines.data.step") == {
        "pipelines.data.extra",
        "pipelines.errors",
    }


def test_the_stage_table_is_dvc_yamls_stages_with_their_loops_and_steps(repo_root):
    """One list of stages (pipelines/orchestration/stage_table.py): the same names, in the same
    order, as dvc.yaml, each looping over the params section its foreach reads, each step
    callable."""
    from pipelines.orchestration.stage_table import STAGES

    stages = yaml.safe_load((repo_root / "dvc.yaml").read_text())["stages"]
    # `code` first: it writes each stage's code file, and is not a pipeline step
    assert ["code", *(s.name for s in STAGES)] == list(stages)
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


def test_a_module_edit_reruns_the_code_stage_then_only_the_stages_whose_code_changed(
    repo_root, tmp_path
):
    """With the real DVC: after an edit to a module only `evaluate` imports, `dvc status` names
    the `code` stage, and `dvc repro` reruns it and the stage on evaluate's code file, not the
    one on ingest's. A new module that no stage imports changes nothing; once a stage imports
    it, `code` fails, naming it, until `make deps` adds it to its deps."""
    import json

    from pipelines.environment import env_with_venv, executable

    shutil.copytree(repo_root / "pipelines", tmp_path / "pipelines")
    code = yaml.safe_load((repo_root / "dvc.yaml").read_text())["stages"]["code"]
    stages = {
        "code": code,
        "on-ingest": {
            "cmd": "date +%N > a.txt",
            "deps": [".stage-code/ingest.md5"],
            "outs": ["a.txt"],
        },
        "on-evaluate": {
            "cmd": "date +%N > b.txt",
            "deps": [".stage-code/evaluate.md5"],
            "outs": ["b.txt"],
        },
    }
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}))
    env = env_with_venv()

    def dvc(*args: str) -> str:
        proc = subprocess.run(
            [executable("dvc"), *args], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    dvc("init", "-q")
    dvc("repro")
    assert json.loads(dvc("status", "--json")) == {}
    evaluation = tmp_path / "pipelines" / "model" / "evaluation.py"
    evaluation.write_text(evaluation.read_text() + "\n# an edit\n")
    assert set(json.loads(dvc("status", "--json"))) == {"code"}
    ran = dvc("repro")
    assert "Running stage 'code'" in ran and "Running stage 'on-evaluate'" in ran, ran
    assert "Stage 'on-ingest' didn't change" in ran, ran
    (tmp_path / "pipelines" / "unused.py").write_text("")  # not a dep of `code`: no rerun
    assert json.loads(dvc("status", "--json")) == {}

    # A new module a stage imports, `make deps` not run: `code` refuses, naming it, rather
    # than write a file that an edit to the new module alone would not change.
    (tmp_path / "pipelines" / "model" / "helper.py").write_text("")
    evaluation.write_text("from pipelines.model import helper\n" + evaluation.read_text())
    proc = subprocess.run(
        [executable("dvc"), "repro"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    said = proc.stdout + proc.stderr
    assert proc.returncode != 0, said
    assert "does not depend on pipelines/model/helper.py" in said and "make deps" in said
    assert "Traceback" not in said, said
