"""Stage processes forked from a preloaded parent, so that the 31 stage processes of a full
`dvc repro` pay for importing pandas, MLflow, Prefect and Great Expectations once, not each.

A stage command (`python -m pipelines.cli train ...`) is still its own DVC stage and its own
process. It connects to this server and hands over its arguments, working folder, environment
and standard streams. The server forks a child that runs the command with them, as `python -m`
would, and the command exits with the child's status. The signals the command gets (SIGTERM
from a stopped `dvc repro`, Ctrl-C) go on to the child, and a command killed outright (SIGKILL)
takes its child with it.

- The server imports third-party packages only, never this project's code: each child imports
  `pipelines` afresh from its working folder, so an edit (or an experiment's copy) runs its own
  code. TensorFlow and Keras are preloaded too: importing them starts none of TensorFlow's
  runtime threads (its thread pools start with the first operation, and the server never runs
  one), so each child starts its own, as a fresh interpreter would. The server checks this
  after the preload (`native_threads`). Prefect re-reads its settings in the child
  (`cli._call_stage`).
- One server per Python environment, user, version of this module and values of the
  environment variables read at import (`PYTHON*`, thread counts, locale, TensorFlow's:
  READ_AT_IMPORT). It exits after IDLE_S seconds without a command; `pipelines stage-server
  stop` stops it now.
- It keeps a scorer for register commands: the fresh interpreter in which a register command
  checks parity (`pipelines.registry.tracking.fresh_process`), started with the command line
  (the scorer script and its zygote flag) and environment the command gives. Once it has
  imported MLflow and Keras, it forks a spare for each register command that asks, at once: each
  serves one command and never loads anything of this project's. A command whose environment
  differs gets none and starts its own, as without a server (and the server starts one for that
  environment). It keeps one for each of the MAX_SCORERS environments asked for last (two
  projects at work side by side do not take each other's); a scorer idle for its WAIT_S ends.
- The command runs in its own fresh interpreter instead (as without a server) when no server
  answers (one is then started for the commands after it), when the server's packages changed
  since it started (a `pip install`: it exits), or when the command is traced or profiled or
  has interpreter flags of its own (`python -X importtime`).

PIPELINES_STAGE_SERVER=off: every stage in a fresh interpreter, and no server is started.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MODE_ENV = "PIPELINES_STAGE_SERVER"
IDLE_S = 600.0
# What every stage process imports, TensorFlow and this project's code excepted.
PRELOAD = (
    "typer",
    "numpy",
    "pandas",
    "pyarrow.parquet",
    "sklearn.metrics",
    "yaml",
    "pydantic",
    "mlflow",
    "mlflow.store.tracking.sqlalchemy_store",
    "prefect",
    "prefect.flows",
    # What runs a flow and its tasks, and pandas' Parquet reader: about 0.06 s a stage.
    "prefect.flow_engine",
    "prefect.task_engine",
    "pyarrow.dataset",
    "great_expectations",
    "matplotlib.figure",  # evaluate's plots (the backend is chosen by the child, on first use)
    "matplotlib.backends.backend_agg",
)
# Loaded after the rest and never run here (about 1.5 s less a stage for train and tune, side by
# side): importing them must start no thread, or the server does not serve (`serve`).
RUNTIMES = ("tensorflow", "keras")
# Environment variables that the interpreter or a preloaded package reads once, at start or at
# import: a command whose values differ runs in its own interpreter.
READ_AT_IMPORT = (
    *("PYTHON", "OMP_", "OPENBLAS_", "MKL_", "LC_", "LANG"),
    *("GX_", "PREFECT_LOGGING_", "MPLBACKEND", "MPLCONFIGDIR"),
    *("TF_", "KERAS_", "CUDA_"),
)
_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
# In a child of the server (its command runs right here): that server's socket, which the child
# asks for a spare scorer whatever the command has since set in its environment (the CLI sets
# TF_CPP_MIN_LOG_LEVEL, which would name another server's socket). None elsewhere.
_SERVER: Path | None = None
_MODULE = "pipelines.orchestration.stage_server"  # this module (`__name__` is `__main__` in
# the server's own process)


def enabled() -> bool:
    return os.environ.get(MODE_ENV, "auto").strip().lower() not in ("off", "0", "false", "no")


@cache
def _version() -> str:
    """This module's source: a changed protocol is another server."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]


def _read_at_import(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith(READ_AT_IMPORT)}


def socket_path() -> Path | None:
    """Where this environment's server listens (in a folder only this user can open), or None
    when that folder is someone else's."""
    folder = Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir())
    folder = folder / f"pipelines-{os.getuid()}"
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        owner = folder.stat()
    except OSError:
        return None
    if owner.st_uid != os.getuid() or owner.st_mode & 0o077:
        return None
    # One server per environment, version of this module, and values of the variables read at
    # import: a command whose values differ gets (and starts) a server of its own.
    read = json.dumps(sorted(_read_at_import(dict(os.environ)).items()))
    key = hashlib.sha256(f"{sys.prefix}\0{_version()}\0{read}".encode()).hexdigest()[:16]
    return folder / f"stages-{key}.sock"


# --- the wire: a 4-byte length, then JSON --------------------------------------------------


def _send(conn: socket.socket, message: dict[str, Any], fds: list[int] | None = None) -> None:
    body = json.dumps(message).encode()
    head = struct.pack("!I", len(body))
    if fds:
        socket.send_fds(conn, [head], fds)
        conn.sendall(body)
    else:
        conn.sendall(head + body)


def _exactly(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the other end closed the connection")
        data += chunk
    return data


def _receive(conn: socket.socket, max_fds: int = 0) -> tuple[dict[str, Any], list[int]]:
    if max_fds:
        head, fds, _, _ = socket.recv_fds(conn, 4, max_fds)
        head += _exactly(conn, 4 - len(head)) if len(head) < 4 else b""
    else:
        head, fds = _exactly(conn, 4), []
    if len(head) != 4:
        raise ConnectionError("the other end closed the connection")
    (size,) = struct.unpack("!I", head)
    return json.loads(_exactly(conn, size)), list(fds)


# --- the command's side ----------------------------------------------------------------------


def _interpreter() -> dict[str, Any]:
    """What a command's interpreter must share with the server's for a child to stand in."""
    return {
        "executable": sys.executable,
        "flags": list(sys.flags),
        "xoptions": {k: str(v) for k, v in sys._xoptions.items()},
        "warnoptions": list(sys.warnoptions),
    }


def run_in_server(module: str, args: list[str]) -> int | None:
    """Run `python -m MODULE ARGS...` in a child of this environment's stage server, with this
    process's working folder, environment and standard streams; the child's exit status. None
    when the command must run in this process: no server answers (one is started for the next
    command), or the server cannot run it as this interpreter would."""
    if _SERVER is not None or not enabled() or sys.gettrace() or sys.getprofile():
        return None  # a traced or profiled command runs where its tracer is
    if sys._xoptions or sys.warnoptions:  # `python -X importtime`, `-W error`: flags of its own
        return None
    path = socket_path()
    if path is None:
        return None
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(str(path))
    except OSError:
        conn.close()
        start_server(path)
        return None
    came: list[int] = []
    child: list[int] = []

    def forward(signum: int, frame: Any) -> None:
        # Handlers run in this (the main) thread between bytecodes: a signal is either kept
        # until the child is known, or sent to it now, never both (a second SIGINT could read
        # as "stop now" to the command).
        if child:
            _kill(child[0], signum)
        else:
            came.append(signum)

    handlers = {sig: signal.signal(sig, forward) for sig in _FORWARDED}
    with conn:
        request = {
            "module": module,
            "args": args,
            "cwd": os.getcwd(),
            "env": dict(os.environ),
            **_interpreter(),
        }
        try:
            _send(conn, request, fds=[0, 1, 2])
            _readable(conn)
            reply, _ = _receive(conn)
        except (OSError, ValueError):  # the server went away before it started anything
            reply = {"refused": "no answer"}
        if "pid" not in reply:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            for signum in came:
                signal.raise_signal(signum)
            log.debug(f"stage server: {reply.get('refused')}; running here")
            return None
        child.append(reply["pid"])
        while came:  # those that came before the child was known
            _kill(reply["pid"], came.pop(0))
        try:
            _readable(conn)
            status = int(_receive(conn)[0]["status"])
        except (OSError, ValueError, KeyError):
            sys.stderr.write(f"error: lost the stage process {reply['pid']} (its server died)\n")
            return 1
    if status < 0:  # killed by a signal: end the same way
        signal.signal(-status, signal.SIG_DFL)
        signal.raise_signal(-status)
        return 128 - status
    return status


def _readable(conn: socket.socket) -> None:
    """Wait until `conn` has something to read, waking every 0.1 s. Python runs a signal's
    handler between bytecodes: a signal that came just before a blocking read would wait
    for the read to end, and the child, which the handler forwards it to, would never get
    it (the read ends only when the child does)."""
    import select

    while not select.select([conn], [], [], 0.1)[0]:
        pass


def _kill(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # it has just ended
        os.kill(pid, signum)


def start_server(path: Path) -> None:
    """Start the server in the background, for the commands after this one."""
    with open(path.with_suffix(".log"), "ab") as server_log:
        subprocess.Popen(
            [sys.executable, "-m", _MODULE, str(path)],
            stdin=subprocess.DEVNULL,
            stdout=server_log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_server() -> bool:
    """Stop this environment's server; True if one was running."""
    path = socket_path()
    if path is None:
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        try:
            conn.connect(str(path))
            _send(conn, {"stop": True})
            _receive(conn)
        except OSError:
            return False
    return True


def take_scorer(argv: list[str], env: dict[str, str]) -> tuple[socket.socket, Path] | None:
    """A spare scorer, forked from the one the server started with this command line (the
    forking scorer script, which gets its socket's descriptor appended) and environment: its
    socket (it says its pid there first) and log file. None when no server runs or it has no
    such scorer; the server then starts one for the next command."""
    reply, fds = _ask_for_scorer(argv, env, take=True)
    if not fds:
        return None
    return socket.socket(fileno=fds[0]), Path(reply["log"])


def scorer_ready(argv: list[str], env: dict[str, str]) -> bool:
    """Whether the server has a spare scorer for this command line and environment; if it has
    none, it starts one now (for a register command to come)."""
    return _ask_for_scorer(argv, env, take=False)[0].get("spare") == "ready"


def _ask_for_scorer(
    argv: list[str], env: dict[str, str], take: bool
) -> tuple[dict[str, Any], list[int]]:
    path = _SERVER or (socket_path() if enabled() else None)
    if path is None:
        return {}, []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        try:
            conn.settimeout(10)
            conn.connect(str(path))
            spec = {"argv": argv, "env": env, "cwd": os.getcwd()}
            _send(conn, {"scorer": spec, "take": take})
            return _receive(conn, max_fds=1)
        except (OSError, ValueError):
            return {}, []


# --- the server's side -----------------------------------------------------------------------


@dataclass
class _Command:
    """A command to run in this forked child."""

    request: dict[str, Any]
    fds: list[int]


@dataclass
class _Scorer:
    """A scorer started ahead (which forks the spares)."""

    process: subprocess.Popen[bytes]
    control: socket.socket  # where the server asks it for a spare
    log: Path


# Environment variables that differ from one stage command to the next without changing what a
# scorer imports: they do not stop a spare from being used.
_PER_COMMAND = ("DVC_", "PWD", "OLDPWD")
# The scorers, in the server's process: one per key, least recently asked for first.
_SCORERS: dict[str, _Scorer] = {}
MAX_SCORERS = 3  # environments kept at once (each scorer idle for its WAIT_S ends by itself)


def _scorer_key(spec: dict[str, Any]) -> str:
    env = sorted((k, v) for k, v in spec["env"].items() if not k.startswith(_PER_COMMAND))
    return hashlib.sha256(json.dumps([spec["argv"], env]).encode()).hexdigest()


def _start_scorer(spec: dict[str, Any], folder: Path) -> _Scorer:
    fd, log = tempfile.mkstemp(prefix="scorer-", suffix=".log", dir=folder)
    ours, theirs = socket.socketpair()
    cwd = spec["cwd"] if os.path.isdir(spec["cwd"]) else None
    with theirs, os.fdopen(fd, "wb") as out:
        process = subprocess.Popen(
            [*spec["argv"], str(theirs.fileno())],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            env=spec["env"],
            cwd=cwd,
            pass_fds=[theirs.fileno()],
        )
    return _Scorer(process, ours, Path(log))


def _fork_spare(scorer: _Scorer, folder: Path) -> tuple[socket.socket, Path]:
    """Ask the scorer for a spare: the end of its socket that a command gets, and its log. The
    scorer forks it when its imports are done (at once, after the first); the server does not
    wait for that."""
    fd, log = tempfile.mkstemp(prefix="scorer-", suffix=".log", dir=folder)
    ours, theirs = socket.socketpair()
    try:
        with theirs:
            socket.send_fds(scorer.control, [b"f"], [theirs.fileno(), fd])
    except OSError:
        ours.close()
        Path(log).unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)
    return ours, Path(log)


def _drop_scorer(key: str) -> None:
    scorer = _SCORERS.pop(key, None)
    if scorer is not None:
        _kill(scorer.process.pid, signal.SIGKILL)
        scorer.control.close()
        scorer.log.unlink(missing_ok=True)


def _drop_scorers() -> None:
    for key in list(_SCORERS):
        _drop_scorer(key)


def _hand_scorer(conn: socket.socket, request: dict[str, Any], folder: Path) -> None:
    """Hand a spare over if the server has a scorer for the command's line and environment
    (`take_scorer`); have one for the commands to come."""
    spec = request["scorer"]
    key = _scorer_key(spec)
    scorer = _SCORERS.pop(key, None)
    if scorer is not None:  # the last one asked for from now on
        _SCORERS[key] = scorer
    fits = scorer is not None and scorer.process.poll() is None
    take = request.get("take", True)
    if fits and take:
        assert scorer is not None
        try:
            channel, log = _fork_spare(scorer, folder)
        except OSError:  # it has just ended: the command starts its own
            pass
        else:
            with channel:
                _send(conn, {"log": str(log)}, fds=[channel.fileno()])
            print(
                f"{time.strftime('%H:%M:%S')} scorer forked from {scorer.process.pid} to "
                f"{spec['cwd']}",
                flush=True,
            )
            return
    _send(conn, {"spare": "ready" if fits else "starting"})
    if fits and not take:  # a register command is to come: the scorer waits another WAIT_S
        assert scorer is not None
        with contextlib.suppress(OSError):  # never waits: a scorer not reading stays as it is
            scorer.control.send(b"k", socket.MSG_DONTWAIT)
    if not fits or take:  # none for this key, or the one there has just ended
        _drop_scorer(key)
        for ended in [k for k, s in _SCORERS.items() if s.process.poll() is not None]:
            _drop_scorer(ended)  # idle for its WAIT_S: it does not count against the live ones
        _SCORERS[key] = _start_scorer(spec, folder)
        while len(_SCORERS) > MAX_SCORERS:
            _drop_scorer(next(iter(_SCORERS)))


def _packages_stamp() -> int:
    """Changes when a `pip install` adds or removes a package in this environment."""
    import sysconfig

    return os.stat(sysconfig.get_paths()["purelib"]).st_mtime_ns


def _refusal(request: dict[str, Any], stamp: int) -> str | None:
    """Why this server cannot run `request` as a fresh interpreter would (None: it can)."""
    if _packages_stamp() != stamp:
        return "the environment's packages changed since the server started"
    mine = _interpreter()
    for key, value in mine.items():
        if request.get(key) != value:
            return f"another interpreter ({key})"
    # Another value of a variable read at import never gets here: it is in the socket's key.
    return None


def serve(path: Path, idle_s: float = IDLE_S) -> _Command | None:
    """Preload, then fork a child per command until IDLE_S seconds pass without one. Returns
    only in a forked child (the command to run there), or None when the server ends."""
    import fcntl

    lock = open(path.with_suffix(".lock"), "a+")  # noqa: SIM115 - held while the server lives
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:  # another server runs or starts
        return None
    _preload(PRELOAD)
    native = native_threads()
    _preload(RUNTIMES)
    if threading.active_count() != 1:  # a thread would be cut in half by each fork
        print(f"stage server: threads after the preload: {threading.enumerate()}", flush=True)
        return None
    if native_threads() != native:  # a runtime's thread pool: each child needs its own
        print(f"stage server: {', '.join(RUNTIMES)} started threads at import", flush=True)
        return None
    # What the preload made is never collected here: frozen, a child's garbage collections
    # skip it, so they neither spend time on it nor copy the pages it is on.
    gc.collect()
    gc.freeze()
    stamp, server = _packages_stamp(), os.getpid()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    path.unlink(missing_ok=True)
    listener.bind(str(path))
    listener.listen(16)
    listener.settimeout(idle_s)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # reap the supervisors
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    preloaded = len(PRELOAD) + len(RUNTIMES)
    print(f"stage server {server} on {path}, preloaded {preloaded} packages", flush=True)
    try:
        while True:
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                return None
            command = _answer(conn, listener, lock, stamp)
            if command is not None:
                return command
    finally:
        if os.getpid() == server:
            _drop_scorers()
            path.unlink(missing_ok=True)


def _preload(names: tuple[str, ...]) -> None:
    import importlib

    for name in names:
        try:
            importlib.import_module(name)
        except Exception as err:  # a child imports it itself, and says what fails
            print(f"stage server: not preloaded: {name}: {err}", flush=True)


def native_threads() -> int:
    """This process's threads, those that Python does not know of included."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:  # no /proc: Python's own count
        return threading.active_count()


def _answer(conn: socket.socket, listener: socket.socket, lock: Any, stamp: int) -> _Command | None:
    """Serve one connection. In the server: None (or SystemExit, to stop). In the forked
    child that runs the command: the command."""
    conn.settimeout(10)  # a command sends its request at once
    try:
        request, fds = _receive(conn, max_fds=3)
    except (OSError, ValueError):
        conn.close()
        return None
    conn.settimeout(None)
    if request.get("stop"):
        _send(conn, {"stopped": True})
        conn.close()
        raise SystemExit(0)
    if "scorer" in request:
        for fd in fds:
            os.close(fd)
        with conn:
            if _packages_stamp() == stamp:
                _hand_scorer(conn, request, Path(listener.getsockname()).parent)
            else:  # a spare would have the old packages imported
                _drop_scorers()
                _send(conn, {"spare": "none"})
        return None
    reason = "three standard streams" if len(fds) != 3 else _refusal(request, stamp)
    if reason is not None:
        with conn:
            _send(conn, {"refused": reason})
        for fd in fds:
            os.close(fd)
        if reason.startswith("the environment's packages"):
            raise SystemExit(0)  # stale: the next command starts a new server
        return None
    if os.fork():  # the server
        for fd in fds:
            os.close(fd)
        conn.close()
        return None
    # The supervisor: it forks the command's process, reports its pid and then its exit status,
    # and kills it if the command goes away (SIGKILL: nothing could forward a signal).
    listener.close()
    lock.close()
    while _SCORERS:  # the server's: a scorer sees its socket close when the server ends
        _SCORERS.popitem()[1].control.close()
    for sig in (signal.SIGCHLD, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)
    pid = os.fork()
    if pid == 0:
        conn.close()
        return _Command(request, fds)
    print(f"{time.strftime('%H:%M:%S')} {pid} in {request['cwd']}: {request['args']}", flush=True)
    for fd in fds:
        os.close(fd)
    _supervise(conn, pid)
    return None  # not reached


def _supervise(conn: socket.socket, pid: int) -> None:
    import select

    try:
        _send(conn, {"pid": pid})
        done = os.pidfd_open(pid)
        while True:
            ready, _, _ = select.select([conn.fileno(), done], [], [])
            if done in ready:
                _, status = os.waitpid(pid, 0)
                _send(conn, {"status": os.waitstatus_to_exitcode(status)})
                break
            if not conn.recv(1):  # the command is gone
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                break
    except OSError:
        _kill(pid, signal.SIGKILL)
    os._exit(0)


def run_command(command: _Command, server: Path) -> None:
    """In the forked child of the server on `server`: become the command's process, then run
    it as `python -m` does. Its SystemExit ends this interpreter as it would have ended its
    own."""
    import importlib
    import runpy

    request = command.request
    for target, fd in enumerate(command.fds):
        os.dup2(fd, target)
        if fd > 2:
            os.close(fd)
    for name, fd in (("stdin", 0), ("stdout", 1), ("stderr", 2)):
        old = getattr(sys, name)
        line = fd == 2 or os.isatty(fd)
        new = open(  # noqa: SIM115 - the process's own stream, open until it ends
            fd,
            "r" if fd == 0 else "w",
            encoding=old.encoding,
            errors=old.errors,
            closefd=False,
            buffering=1 if line and fd else -1,
        )
        if getattr(old, "write_through", False):  # python -u, PYTHONUNBUFFERED
            new.reconfigure(write_through=True)
        setattr(sys, name, new)
        setattr(sys, f"__{name}__", new)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    for name in [m for m in sys.modules if m == "pipelines" or m.startswith("pipelines.")]:
        del sys.modules[name]  # the command's own code, from its working folder
    if not sys.flags.safe_path:  # `python -m` puts the working folder first, unless -P
        sys.path[0] = request["cwd"]
    importlib.invalidate_caches()
    importlib.import_module(_MODULE)._SERVER = server  # type: ignore[attr-defined]
    sys.argv = ["-m", *request["args"]]
    runpy.run_module(request["module"], run_name="__main__", alter_sys=True)


def main() -> None:  # pragma: no cover - the server's process
    path = Path(sys.argv[1])
    idle_s = float(sys.argv[2]) if len(sys.argv) > 2 else IDLE_S
    command = serve(path, idle_s)
    if command is not None:
        run_command(command, path)


if __name__ == "__main__":  # pragma: no cover
    main()
