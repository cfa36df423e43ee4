"""Where Prefect runs: one local server, started on demand and reused by every DVC stage.

Without an API URL, each Python process that runs a flow would start its own temporary
Prefect server (7-15 s each). DVC runs every stage in its own process, so instead the first
stage starts `prefect server start` in the background and later stages reuse it.

Environment:
  PREFECT_API_URL         use this server (local or remote) as is.
  PIPELINES_PREFECT       `auto` (default): use/start the local server; `off`: call the step
                          functions directly, without Prefect.
  PIPELINES_PREFECT_PORT  port of the on-demand local server (default 4200).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from pathlib import Path

from pipelines.environment import executable, file_lock
from pipelines.errors import KnownFailure, OrchestrationError
from pipelines.orchestration.local_server import ServerDidNotStart, answers, wait_until_answers

log = logging.getLogger(__name__)

DEFAULT_PORT = 4200


def prefect_enabled() -> bool:
    mode = os.environ.get("PIPELINES_PREFECT", "auto").strip().lower()
    if mode not in ("auto", "off"):
        raise OrchestrationError(f"PIPELINES_PREFECT must be 'auto' or 'off', not {mode!r}")
    return mode == "auto"


def local_api_url() -> str:
    port = int(os.environ.get("PIPELINES_PREFECT_PORT", DEFAULT_PORT))
    return f"http://127.0.0.1:{port}/api"


def _prefect_home() -> Path:
    return Path(os.environ.get("PREFECT_HOME", Path.home() / ".prefect")).expanduser()


def _pid_file() -> Path:
    return _prefect_home() / "pipelines-server.pid"


def healthy(api_url: str, timeout: float = 1.0) -> bool:
    return answers(f"{api_url}/health", timeout)


def start_local_server(api_url: str, wait_s: float = 90.0) -> int:
    """Start `prefect server start` detached, wait until it answers, return its pid."""
    port = api_url.rsplit(":", 1)[1].split("/")[0]
    command = [
        executable("prefect"),
        "server",
        "start",
        "--host",
        "127.0.0.1",
        "--port",
        port,
    ]
    home = _prefect_home()
    home.mkdir(parents=True, exist_ok=True)
    log_path = home / "pipelines-server.log"
    log.info(f"starting a local Prefect server on {api_url} (log: {log_path})")
    with open(log_path, "ab") as server_log:
        proc = subprocess.Popen(
            command,
            stdout=server_log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        wait_until_answers(f"{api_url}/health", proc, wait_s, log_path)
    except ServerDidNotStart as err:
        if proc.poll() is None:
            proc.terminate()
        _pid_file().unlink(missing_ok=True)  # no pid file names a server that is not there
        raise OrchestrationError(
            f"the Prefect server did not start: {err}\n(or set PIPELINES_PREFECT=off)"
        ) from None
    _pid_file().write_text(str(proc.pid))  # written once the server answers
    return proc.pid


def ensure_api() -> str | None:
    """Point this process at a Prefect API, starting the local server if none is up.

    Must run before `prefect` is imported. Returns the API URL, or None when Prefect is off.
    """
    if not prefect_enabled():
        return None
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    url = local_api_url()
    if not healthy(url):
        # Under a lock, so that two stages starting at once start one server, and the pid file
        # names the server that runs; the second finds it up once it has the lock.
        with file_lock(_prefect_home() / "pipelines-server.lock", 180, "a Prefect server start"):
            if not healthy(url):
                start_local_server(url)
    os.environ["PREFECT_API_URL"] = url
    return url


def is_prefect_server(pid: int) -> bool:
    """Whether process `pid` runs `prefect server start` (its command line, from /proc)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    words = [Path(a.decode(errors="replace")).name for a in argv if a]
    return any(
        words[i : i + 3] == ["prefect", "server", "start"] for i in range(max(0, len(words) - 2))
    )


def stop_local_server() -> bool:
    """Stop the server this package started (by its pid file). True if one was stopped."""
    pid_file = _pid_file()
    if not pid_file.exists():
        return False
    pid = int(pid_file.read_text().strip() or 0)
    pid_file.unlink()
    if not is_prefect_server(pid):
        # A stale file (a reboot, a server that died): the pid may now be anyone's process.
        log.info(f"{pid_file}: process {pid} is not a Prefect server; nothing stopped")
        return False
    try:
        os.killpg(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return False
    for _ in range(50):
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    os.killpg(pid, signal.SIGKILL)
    return True


class _HideKnownFailures(logging.Filter):
    """Keep a known failure's traceback and repeated state lines off the terminal: the CLI
    prints its message once. The Prefect run log (the API handler) still gets all of it."""

    def __init__(self) -> None:
        super().__init__()
        names = set()
        pending = [KnownFailure]
        while pending:
            cls = pending.pop()
            names.add(cls.__name__)
            pending.extend(cls.__subclasses__())
        self._states = tuple(f"{name}: " for name in names) + tuple(f"{name}(" for name in names)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], KnownFailure):
            return False
        message = record.getMessage()
        return not ("in state Failed(" in message and any(s in message for s in self._states))


def quiet_known_failures() -> None:
    """Install `_HideKnownFailures` on Prefect's console handlers, unless PIPELINES_DEBUG=1
    asks for every traceback."""
    if os.environ.get("PIPELINES_DEBUG", "").strip() not in ("", "0"):
        return
    from prefect.logging.handlers import PrefectConsoleHandler

    loggers = [
        logging.getLogger(),
        *(logging.getLogger(name) for name in logging.root.manager.loggerDict),
    ]
    for logger in loggers:
        for handler in getattr(logger, "handlers", []):
            if isinstance(handler, PrefectConsoleHandler) and not any(
                isinstance(f, _HideKnownFailures) for f in handler.filters
            ):
                handler.addFilter(_HideKnownFailures())
