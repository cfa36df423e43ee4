"""This Python environment as child processes need it (its console scripts, and a process
environment with its bin folder first on PATH), and the file locks that processes on one host
share."""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)


def project_root(start: Path | None = None) -> Path:
    """The DVC project root above `start` (default: the working directory).

    `dvc exp run --temp/--queue` runs stages in a copy under `<root>/.dvc/tmp/exps/...`; runs
    logged there must still land in the real project's store, so that copy is skipped.
    """
    here = (start or Path.cwd()).resolve()
    parts = here.parts
    for i in range(len(parts) - 2):
        if parts[i : i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    for candidate in (here, *here.parents):
        if (candidate / ".dvc").is_dir() or (candidate / "dvc.yaml").is_file():
            return candidate
    return here


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


@contextmanager
def file_lock(path: Path, wait_s: float, what: str) -> Iterator[None]:
    """Hold an exclusive `flock` on `path` (created if missing) for the block: one holder at a
    time among all processes and threads of this host. Says once that it waits for `what`;
    `TimeoutError` after `wait_s` seconds."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        deadline, told = time.monotonic() + wait_s, False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{what} has held {path} for over {wait_s:.0f} s") from None
                if not told:
                    log.info(f"waiting for {what} to finish")
                    told = True
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGTERM and SIGINT until the block ends, so that steps which must happen together
    (two alias writes) are never cut between them: a signal that comes meanwhile is noted and
    raised again, to the handler it would have met, right after. Python runs signal handlers
    in the main thread only, so elsewhere the block runs as it is."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    came: list[int] = []
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    for sig in handlers:
        signal.signal(sig, lambda signum, frame: came.append(signum))
    try:
        yield
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        for signum in came:
            signal.raise_signal(signum)
