"""The project the bad-input tests share (one per test module): a real SQLite MLflow registry in
a temp folder where `tabular-dnn` already has a `@champion`, trained, evaluated and registered by
the pipeline's own functions; and the stage commands run in this process, as `pipelines ARGS`
would run them (ingest -> validate -> split, without Prefect), stopping at the first failure."""

from __future__ import annotations

import contextlib
import copy
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from pipelines.cli import app
from tests.chain import split_train_evaluate_register

NAME = "tabular-dnn"


@contextlib.contextmanager
def registered_project(tmp_path_factory, raw_params: dict, repo_root: Path) -> Iterator[Path]:
    """A project with a registered champion, built by the pipeline's own stage functions; the
    working directory and the MLflow URI point at it until the block ends."""
    from pipelines.config import parse_config
    from pipelines.orchestration.stages import validate_dataset

    root = tmp_path_factory.mktemp("bad-input")
    shutil.copytree(repo_root / "gx" / "expectations", root / "suites")
    params = copy.deepcopy(raw_params)
    params["models"][NAME]["train"].update(max_epochs=25, learning_rate=0.01)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        mp.setenv("PIPELINES_PREFECT", "off")
        import mlflow

        mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
        cfg = parse_config(params)
        from pipelines.data.datasets import ingest

        raw = ingest("breast_cancer", cfg.dataset("breast_cancer"), root / "raw.parquet")
        first = validate_dataset(
            cfg, "breast_cancer", raw, root / "suites" / "breast_cancer.json", root / "docs"
        )
        assert first.success and "drift not checked" in first.notes[0]
        registration = split_train_evaluate_register(cfg, NAME, root, raw, root / "docs")
        assert registration.promoted, registration.gate_failures
        yield root


def registry_state() -> list[tuple]:
    import mlflow

    client = mlflow.MlflowClient()
    return sorted(
        (v.name, str(v.version), tuple(sorted(v.aliases)))
        for m in client.search_registered_models()
        for v in client.search_model_versions(f"name='{m.name}'")
    )


def runs_with_status(status: str) -> int:
    import mlflow

    return len(mlflow.search_runs(search_all_experiments=True, filter_string=f"status='{status}'"))


def stage_commands(case: Path, dataset: str, params: Path) -> list[list[str]]:
    raw, out = case / "raw.parquet", str(case / "processed")
    return [
        ["ingest", dataset, "--out", str(raw), "--params", str(params)],
        [
            "validate",
            dataset,
            "--data",
            str(raw),
            "--suite",
            f"suites/{dataset}.json",
            "--report-dir",
            str(case / "docs"),
            "--params",
            str(params),
        ],
        ["split", dataset, "--data", str(raw), "--params", str(params), "--out-dir", out],
    ]


def invoke(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    """Run a CLI command in this process, as `pipelines ARGS` would: (exit code, output)."""
    capsys.readouterr()
    code = app(args, standalone_mode=False, prog_name="pipelines")
    captured = capsys.readouterr()
    return int(code or 0), captured.out + captured.err


def run_until_failure(
    project: Path, case: str, dataset: str, source: Path | str, capsys, **overrides
):
    """Point `dataset` at `source`, run ingest -> validate -> split like `dvc repro` (stopping at
    the first failure) and return (failed stage, exit code, output, case folder)."""
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["datasets"][dataset]["source"] = str(source)
    for key, value in overrides.items():
        params["validation"]["drift"][key] = value
    case_dir = project / "cases" / case
    case_dir.mkdir(parents=True, exist_ok=True)
    params_path = case_dir / "params.yaml"
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    for args in stage_commands(case_dir, dataset, params_path):
        code, output = invoke(args, capsys)
        if code != 0:
            return args[0], code, output, case_dir
    return None, 0, "", case_dir
