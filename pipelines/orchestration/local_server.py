"""Helpers for the local HTTP servers the pipeline starts (Prefect, `mlflow server`,
`mlflow models serve`): a free port, and waiting until a server answers."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any


class ServerDidNotStart(RuntimeError):
    """The server process exited, or did not answer in time."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def answers(url: str, timeout: float = 1.0) -> bool:
    """True when a GET of `url` returns 200."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            status: int = response.status
            return status == 200
    except OSError:
        return False


def wait_until_answers(
    url: str, proc: subprocess.Popen[Any], wait_s: float, log_path: Path | None = None
) -> None:
    """Poll `url` until it answers; stop early, with the log's tail, if `proc` exits."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if answers(url):
            return
        if proc.poll() is not None:
            raise ServerDidNotStart(
                f"{_command(proc.args)!r} exited with code {proc.returncode}"
                + (f"; see {log_path}:\n{_tail(log_path)}" if log_path else "")
            )
        time.sleep(0.5)
    raise ServerDidNotStart(
        f"nothing answered at {url} within {wait_s:.0f} s"
        + (f"; see {log_path}:\n{_tail(log_path)}" if log_path else "")
    )


def _command(args: Any) -> str:
    """A process's command line as one string (`Popen.args`: a string or a sequence)."""
    return args if isinstance(args, str) else " ".join(map(str, args))


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"
