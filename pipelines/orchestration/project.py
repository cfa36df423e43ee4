"""Setting the project up for the stages and the scheduler: the params file checked for what
`dvc repro` needs beyond the config (every section dvc.yaml names), each model's search folder
(its train stage depends on it) and the scheduled retraining deployment. The CLI only prints."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from pipelines.config import PipelineConfig, load_config
from pipelines.environment import executable, project_root
from pipelines.errors import ConfigError

# The sections of a `models.<name>` entry that dvc.yaml names as stage params. DVC refuses to run
# when one is missing from the file, even though the config fills in its defaults.
DVC_TRACKED_SECTIONS = ("model", "train", "gate")


def missing_tracked_sections(raw: dict[str, Any]) -> list[str]:
    """`models.<name>.<section>` keys that dvc.yaml names but the params file leaves out."""
    models = raw.get("models") if isinstance(raw, dict) else None
    return [
        f"models.{name}.{section}"
        for name, entry in (models or {}).items()
        if isinstance(entry, dict)
        for section in DVC_TRACKED_SECTIONS
        if section not in entry
    ]


def search_folders(cfg: PipelineConfig, root: Path) -> list[Path]:
    """Each model's search folder: a dependency of its train stage (tune writes search.json
    there), so it must exist, kept in git by a `.gitkeep`, before `dvc repro`."""
    return [root / cfg.paths.models / name / "search" for name in cfg.models]


def check_params_file(path: str | Path = "params.yaml") -> PipelineConfig:
    """`load_config`, plus what `dvc repro` needs beyond it: every section dvc.yaml names."""
    cfg = load_config(path)
    raw = yaml.safe_load(Path(path).read_text())
    if "search" not in raw:
        raise ConfigError(
            f"{path}: no `search:` section; dvc.yaml's tune stage iterates it, so `dvc repro` "
            "would stop with \"Could not find 'search'\". Add `search: {}` for no search"
        )
    missing = missing_tracked_sections(raw)
    if missing:
        raise ConfigError(
            f"{path}: dvc.yaml tracks {', '.join(missing)}, which the file leaves out, so "
            "`dvc repro` would stop with 'Parameters ... are missing'. Add each one; an empty "
            "mapping takes the defaults, for example:  model: {}  train: {}  gate: {}"
        )
    return cfg


def create_search_folders(cfg: PipelineConfig, root: Path) -> list[Path]:
    """Create each model's missing `models/<model>/search/` folder, with a `.gitkeep` for git
    to keep (`train@<model>` depends on it; DVC has no optional dependencies). Returns those
    created."""
    created = []
    for folder in search_folders(cfg, root):
        if not folder.is_dir():
            folder.mkdir(parents=True)
            (folder / ".gitkeep").touch()
            created.append(folder)
    return created


def deploy_retraining(cfg: PipelineConfig, name: str, params: Path) -> str:
    """Create (or update) the scheduled deployment `retrain/<name>` of the retraining flow on
    the Prefect server this process points at, with the cron, timezone and work pool of
    `orchestration` (the process work pool is created if missing). Returns its id."""
    orch = cfg.orchestration
    subprocess.run(
        [executable("prefect"), "work-pool", "create", orch.work_pool, "--type", "process"],
        capture_output=True,
        check=False,
    )
    from prefect import flow
    from prefect.schedules import Cron

    return str(
        flow.from_source(
            source=str(project_root()), entrypoint="pipelines/orchestration/retrain.py:retrain"
        ).deploy(  # type: ignore[union-attr]  # from_source is sync here (no event loop)
            name=name,
            work_pool_name=orch.work_pool,
            schedules=[Cron(orch.schedule, timezone=orch.timezone)],
            parameters={"params": str(params)},
            build=False,
            push=False,
            print_next_steps=False,
        )
    )
