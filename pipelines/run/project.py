"""Setting the project up for the stages and the scheduler: each model's search folder (its
train stage depends on it) and the scheduled retraining deployment. The CLI only prints."""

from __future__ import annotations

import subprocess
from pathlib import Path

from pipelines.config import PipelineConfig, search_folders
from pipelines.environment import executable, project_root


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
            source=str(project_root()), entrypoint="pipelines/run/retrain.py:retrain"
        ).deploy(
            name=name,
            work_pool_name=orch.work_pool,
            schedules=[Cron(orch.schedule, timezone=orch.timezone)],
            parameters={"params": str(params)},
            build=False,
            push=False,
            print_next_steps=False,
        )
    )
