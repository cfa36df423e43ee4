"""Throwaway copies of the project for end-to-end tests: `dvc repro` runs there, with its own
MLflow database, DVC cache and Prefect home."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from pipelines.environment import env_with_venv
from pipelines.orchestration.local_server import free_port

# A whole pipeline's first `dvc repro` trains every model: on 2 busy cores that is 15 to 20 min.
REPRO_TIMEOUT_S = 2400


def sh(
    args: list[str], cwd: Path, env: dict, check: bool = True, timeout: int = 900
) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} failed ({proc.returncode}):\n"
            f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        )
    return proc


def copy_project(repo_root: Path, root: Path) -> dict:
    """The repo's tracked and unignored files copied to `root`, in a new git repository;
    returns the environment its commands run in (its own Prefect home and port)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=repo_root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for rel in listed.splitlines():
        src = repo_root / rel
        if src.is_file():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, root / rel)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MLFLOW_", "PREFECT_", "PIPELINES_"))
    }
    env = env_with_venv(env)
    env.update(
        PREFECT_HOME=str(root / ".prefect-home"),
        PIPELINES_PREFECT_PORT=str(free_port()),
        TF_CPP_MIN_LOG_LEVEL="2",
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@example.com",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@example.com",
    )
    (root / ".gitignore").write_text((root / ".gitignore").read_text() + ".prefect-home/\n")
    sh(["git", "init", "-q"], root, env)
    return env


def commit_all(root: Path, env: dict) -> None:
    sh(["git", "add", "-A"], root, env)
    sh(["git", "commit", "-qm", "snapshot"], root, env)
