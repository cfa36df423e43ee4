"""This Python environment as child processes need it: its console scripts, and a process
environment with its bin folder first on PATH."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path


def env_with_venv(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of `base` (default: this process's environment) with this environment's bin
    folder first on PATH, so child processes find its `python`, `dvc`, `mlflow`, `prefect`."""
    env = dict(os.environ if base is None else base)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def executable(name: str) -> str:
    """A console script of this environment (`prefect`, `dvc`, `mlflow`), else the one on
    PATH."""
    local = Path(sys.executable).with_name(name)
    return str(local) if local.exists() else (shutil.which(name) or name)
