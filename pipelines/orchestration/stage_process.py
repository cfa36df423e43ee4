"""One stage as a child process, supervised: its output streamed to the Prefect log, a timeout,
retries for transient faults only, and every stage process stopped when the flow is cancelled
or stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections import deque
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from pipelines.config import OrchestrationConfig
from pipelines.environment import env_with_venv
from pipelines.orchestration import live_stages
from pipelines.orchestration.dvc_project import commit_stage

TRANSIENT = (
    "database is locked",
    "Connection refused",
    "Connection reset",
    "Temporary failure in name resolution",
    "Max retries exceeded",
    "TEMPORARILY_UNAVAILABLE",
    "503 Service Unavailable",
    "Unable to acquire lock",
)


class StageFailed(RuntimeError):
    """A stage command exited non-zero; `transient` says whether a retry may help."""

    def __init__(self, stage: str, code: int, tail: str, retries: int = 0):
        self.stage, self.code, self.tail, self.retries = stage, code, tail, retries
        self.transient = any(marker in tail for marker in TRANSIENT)
        if not self.transient:
            kind = "not a transient fault: not retried"
        elif retries:
            kind = f"transient fault: retried up to {retries} time(s)"
        else:
            kind = "transient fault, but this stage is never retried"
        how = "timed out" if code == -1 else f"exited with {code}"
        super().__init__(f"stage {stage} {how} ({kind}):\n{tail}")

    def __reduce__(self) -> tuple[Any, ...]:  # travels between Dask processes
        return (StageFailed, (self.stage, self.code, self.tail, self.retries))


def _retry_stage(task: Any, task_run: Any, state: Any) -> bool:
    """A stage in a child process: retry only a failure whose output names a fault that may
    pass (`TRANSIENT`: a locked database, a busy server). `flows._retry_step` is the same rule
    for a step in this process."""
    try:
        state.result()
    except StageFailed as err:
        return err.transient
    except Exception:
        return False
    return False


@task(name="stage", task_run_name="{stage}", cache_policy=NO_CACHE, retry_condition_fn=_retry_stage)
def supervised_stage(
    stage: str,
    command: str,
    root: str,
    timeout_s: float = 3600,
    retries: int = 0,
    commit: bool = False,
) -> str:
    """Run one stage command in the project, streaming its output to the Prefect log. The
    command is stopped (its whole process group) on timeout or on any other way out. With
    `commit`, the stage's outputs are recorded in `dvc.lock` and the cache once it succeeds
    (a failed commit fails the task, and is not retried: the stage would run again)."""
    logger = get_run_logger()
    logger.info("%s: %s", stage, command)
    proc = subprocess.Popen(
        command,
        shell=True,
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env_with_venv(),
        start_new_session=True,
    )
    live_stages.track(proc)
    tail: deque[str] = deque(maxlen=40)

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            tail.append(line.rstrip())
            logger.info("%s | %s", stage, line.rstrip())

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        code = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        code = None
    finally:
        _stop(proc)
        live_stages.untrack(proc)
    reader.join(timeout=10)
    if code is None:
        raise StageFailed(
            stage, -1, f"timed out after {timeout_s:.0f} s\n" + "\n".join(tail), retries
        )
    if code != 0:
        raise StageFailed(stage, code, "\n".join(tail), retries)
    if commit:
        commit_stage(Path(root), stage)
    return stage


def stop_stages() -> int:
    """Stop every stage process this process started that still runs (their whole groups);
    returns how many. Each runs in its own session, so that a timeout stops its whole group,
    and so outlives the flow unless the flow stops it: a cancelled or stopped flow calls this
    before it exits, so that no stage goes on to register a model."""
    running = live_stages.running()
    for proc in running:
        _stop(proc)
    return len(running)


def _stop(proc: subprocess.Popen[str]) -> None:
    """Terminate a stage's process group if it is still running (timeout, cancellation)."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue
        except ProcessLookupError:
            return


def stage_retries(orch: OrchestrationConfig, stage: str) -> int:
    # A register stage is never retried: a retry after a partial failure could register a
    # second version (the first is tagged incomplete by the next registration).
    return 0 if stage.startswith("register@") else orch.retries


def stage_task(orch: OrchestrationConfig, stage: str) -> Any:
    return supervised_stage.with_options(
        retries=stage_retries(orch, stage),
        retry_delay_seconds=[float(s) for s in orch.retry_delay_seconds],
    )
