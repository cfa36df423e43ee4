"""The DVC project as the retraining flow drives it: `dvc` commands, which stages changed and
their commands, the params' data sources, and the remote data is pushed to."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from pipelines.environment import executable
from pipelines.registry.lineage import dvc_lock_guarded

REMOTE_ENV = "PIPELINES_DVC_REMOTE"


def dvc(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [executable("dvc"), *args], cwd=root, capture_output=True, text=True, check=False
    )
    if check and proc.returncode != 0:
        raise RuntimeError(f"dvc {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def commit_stage(root: Path, stage: str) -> None:
    """`dvc commit --force <stage>`: its outputs into the cache and `dvc.lock`, as `dvc repro`
    records a stage that ran. One at a time across threads and processes, and never while a
    stage reads `dvc.lock` (`dvc_lock_guarded`, a file lock under `.dvc/tmp`): DVC's own lock
    gives up after about 3 s, with "Unable to acquire lock", and DVC rewrites the file in
    place."""
    with dvc_lock_guarded(root / "dvc.lock"):
        dvc(root, "commit", "--force", stage)


def changed_stages(root: Path) -> set[str]:
    """Stages whose deps, params or outputs differ from `dvc.lock` (`dvc status`)."""
    status = json.loads(dvc(root, "status", "--json").stdout or "{}")
    return {name.split(":")[-1] for name in status}


def stage_commands(root: Path, names: list[str]) -> dict[str, str]:
    """The resolved `cmd` of each named stage, as `dvc.yaml` defines it."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        return {name: repo.stage.collect(name)[0].cmd for name in names}


def set_sources(params_path: Path, sources: dict[str, str]) -> None:
    """Point datasets at new files, editing `params.yaml` in place (comments kept), so that
    DVC sees the change and `dvc.lock` records it."""
    from dvc.utils.serialize import modify_yaml

    with modify_yaml(str(params_path)) as data:
        for dataset, source in sources.items():
            if dataset not in data["datasets"]:
                raise KeyError(f"datasets.{dataset}: no such dataset")
            data["datasets"][dataset]["source"] = source


def _use_remote(root: Path, url: str) -> None:
    """Make `url` the default DVC remote in `.dvc/config.local` (never committed), written
    through DVC's config API: on a `dvc remote add` command line, a password in the URL would
    show in any local user's process list."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo, repo.config.edit("local") as conf:
        conf["remote"]["pipelines-remote"] = {"url": url}
        conf["core"]["remote"] = "pipelines-remote"


def push_data(root: Path) -> str:
    """`dvc push` to the remote in `PIPELINES_DVC_REMOTE` (set up in `.dvc/config.local`, never
    committed) or to the configured default remote; nothing when there is none."""
    url = os.environ.get(REMOTE_ENV)
    if url:
        _use_remote(root, url)
    if not dvc(root, "remote", "list").stdout.strip():
        return "no DVC remote configured: nothing pushed"
    return (dvc(root, "push").stdout.strip().splitlines() or ["pushed"])[-1]
