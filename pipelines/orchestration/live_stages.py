"""The stage processes running now in this process, for `stage_process.stop_stages`.

Apart from `stage_process` on purpose: Prefect ships the `supervised_stage` task to Dask workers by
value, with every global it names, and a lock cannot be serialized; a module it
names is sent by reference instead."""

from __future__ import annotations

import subprocess
import threading

_LIVE: set[subprocess.Popen[str]] = set()
_LOCK = threading.Lock()


def track(proc: subprocess.Popen[str]) -> None:
    with _LOCK:
        _LIVE.add(proc)


def untrack(proc: subprocess.Popen[str]) -> None:
    with _LOCK:
        _LIVE.discard(proc)


def running() -> list[subprocess.Popen[str]]:
    with _LOCK:
        return [proc for proc in _LIVE if proc.poll() is None]
