"""Scoring registered models in a fresh interpreter that imports only MLflow and NumPy, as
`mlflow models serve` does."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from pipelines.registry.tracking.connection import tracking_uri

WAIT_S = 300.0  # how long a scorer waits for its jobs before it ends by itself (a spare too)
ZYGOTE_FLAG = "--zygote"  # before the descriptor: fork a scorer per request (see below)
# Runs in a fresh interpreter that imports only mlflow and numpy, as `mlflow models serve` does,
# and Keras, which loading any registered model imports: it does so before it reads its jobs, so
# a process started ahead of time (`started_scorer`, or a spare the stage server keeps) has paid
# for its imports by the time the caller has a model to score. Its jobs come as one JSON line on
# the socket whose descriptor is its last argument, after it has said its pid there: the
# tracking URI, the caller's folder, and (model URI, inputs, output) triples. It loads each
# model and scores its input file; one process serves all the checks of a registration, so
# TensorFlow is imported once for them. It answers with one JSON line (per job, None or the
# error that stopped it) and ends at once, without the interpreter's teardown.
#
# Started with ZYGOTE_FLAG (FORKING_ARGV, by the stage server), it stays as it is once imported
# and forks one scorer per request on its socket (a byte, with the new scorer's socket and log
# file): each fork is the interpreter above, imports paid, nothing else loaded, and serves one
# caller. It forks only if importing TensorFlow and Keras started no thread (TensorFlow's pools
# start with its first operation, in the fork); if one did, each request starts a fresh
# interpreter instead. It ends after WAIT_S without a request or a keep-alive (the byte "k"
# alone, sent when a command asks whether it is ready: train and evaluate, for the register
# command to come, and register's own look-up), or when its socket closes.
_SCORE_SCRIPT = f"""
import json, os, signal, socket, subprocess, sys, threading
signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # as a shell would start it, whoever starts it
channel = socket.socket(fileno=int(sys.argv[-1]))
def native_threads():
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 0
import numpy as np
import scipy.linalg  # what Keras imports: its BLAS starts its (fork-safe) thread pool here
import mlflow
import mlflow.pyfunc
stack = native_threads()
import keras
try:  # what the first load would pay for too: the SQL store's module, and the map of installed
    # packages that MLflow checks a model's requirements against (about 1.8 s)
    import mlflow.store.tracking.sqlalchemy_store
    from mlflow.utils.requirements_utils import _init_packages_to_modules_map
    _init_packages_to_modules_map()
except Exception:  # only ever a head start
    pass
if sys.argv[-2:-1] == [{ZYGOTE_FLAG!r}]:
    control, channel = channel, None
    control.settimeout({WAIT_S})
    # A fork copies one thread. The stack's BLAS pools and allocator thread re-start in the
    # child (as in the stage server's children); any other would be cut in half.
    fork = stack > 0 and native_threads() == stack and threading.active_count() == 1
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps its forks
    while channel is None:
        try:
            got, fds, _, _ = socket.recv_fds(control, 1, 2)
        except OSError:
            got = b""
        if got == b"k" and not fds:  # the stage server still wants it: wait on
            continue
        if not got or len(fds) != 2:
            os._exit(0)  # idle, or the stage server is gone
        sys.stdout.flush()
        sys.stderr.flush()
        if not fork:  # the same script, in a fresh interpreter of its own
            code = sys.orig_argv[sys.orig_argv.index("-c") + 1]
            subprocess.Popen([sys.executable, "-c", code, str(fds[0])], pass_fds=[fds[0]],
                             stdin=subprocess.DEVNULL, stdout=fds[1], stderr=fds[1])
        elif os.fork() == 0:
            control.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            os.dup2(fds[1], 1)
            os.dup2(fds[1], 2)
            os.close(fds[1])
            channel = socket.socket(fileno=fds[0])
            break
        for fd in fds:
            os.close(fd)
channel.settimeout({WAIT_S})
try:
    channel.sendall(f"{{os.getpid()}}\\n".encode())
    line = channel.makefile("rb").readline()
except OSError:
    line = b""
if not line:  # nobody came for it
    os._exit(0)
request = json.loads(line)
os.chdir(request["cwd"])
mlflow.set_tracking_uri(request["tracking_uri"])
errors = []
for model_uri, inputs, output in request["jobs"]:
    try:
        got = mlflow.pyfunc.load_model(model_uri).predict(np.load(inputs))
        np.save(output, np.asarray(got, dtype="float64"))
        errors.append(None)
    except Exception as err:
        errors.append(f"{{type(err).__name__}}: {{err}}"[:500])
assert "pipelines" not in sys.modules
channel.sendall((json.dumps(errors) + "\\n").encode())
os._exit(0)  # the answers are on disk: skip TensorFlow's teardown (1.5 to 2 s)
"""
# What starts a scorer: the script's descriptor is appended.
SCORER_ARGV = (sys.executable, "-c", _SCORE_SCRIPT)
# What the stage server starts for register commands (and keys by): the scorer that forks a
# spare per request.
FORKING_ARGV = (*SCORER_ARGV, ZYGOTE_FLAG)


class FreshScorer:
    """One fresh interpreter that scores registered models (`_SCORE_SCRIPT`), already started:
    it imports MLflow, NumPy and Keras while the caller gets its models ready, and reads its
    jobs only when `score` is called. Used once; `close` stops it if it never was.

    `FreshScorer.start()` starts one here; the stage server hands over one forked from the
    scorer it keeps for commands with this environment (`start_scorer_ahead(spare)` in a
    register command). Either says its pid on the socket once its imports are done."""

    def __init__(
        self,
        channel: socket.socket,
        log: Path,
        process: subprocess.Popen[bytes] | None = None,
    ) -> None:
        self._channel: socket.socket | None = channel
        self._log, self._process = log, process
        self._pid = process.pid if process is not None else None

    @classmethod
    def start(cls) -> FreshScorer:
        # The URI (it may hold a password) goes in on the socket, never on the command line,
        # which any local user can read (`ps`).
        env = scorer_env()
        log = Path(tempfile.mkstemp(prefix="pipelines-scorer-", suffix=".log")[1])
        ours, theirs = socket.socketpair()
        with theirs, open(log, "wb") as out:
            process = subprocess.Popen(
                [*SCORER_ARGV, str(theirs.fileno())],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                env=env,
                pass_fds=[theirs.fileno()],
            )
        return cls(ours, log, process)

    def score(self, jobs: Sequence[tuple[str, Path]]) -> list[np.ndarray | str]:
        """Load each `(model_uri, inputs.npy)` and predict. Returns, per job, the predictions
        (float64) or the error that stopped that model, as text."""
        channel, self._channel = self._channel, None
        if channel is None:
            raise RuntimeError("a FreshScorer scores once")
        with tempfile.TemporaryDirectory() as tmp, channel, channel.makefile("rb") as reader:
            outputs = [Path(tmp) / f"{i}.npy" for i in range(len(jobs))]
            request = {
                "tracking_uri": tracking_uri(),
                "cwd": os.getcwd(),
                "jobs": [
                    [uri, str(Path(inputs).resolve()), str(out)]
                    for (uri, inputs), out in zip(jobs, outputs, strict=True)
                ],
            }
            channel.settimeout(600)
            try:
                said = reader.readline()  # its pid, once it has imported
                if said.strip().isdigit():
                    self._pid = int(said)
                channel.sendall((json.dumps(request) + "\n").encode())
                answer = reader.readline()
            except TimeoutError:
                self._stop()
                raise
            except OSError:
                answer = b""
            self._reap()
            if not answer:
                tail = self._log.read_text(errors="replace").strip().splitlines()[-1:]
                self._log.unlink(missing_ok=True)
                return [f"the scoring process failed: {tail}" for _ in jobs]
            self._log.unlink(missing_ok=True)
            errors = json.loads(answer)
            return [
                np.load(out) if error is None else error
                for error, out in zip(errors, outputs, strict=True)
            ]

    def close(self) -> None:
        """Stop the process if it was never given its jobs (one handed over ends by itself when
        its socket closes)."""
        channel, self._channel = self._channel, None
        if channel is not None:
            channel.close()
            self._stop()
            self._log.unlink(missing_ok=True)

    def _stop(self) -> None:
        if self._pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._pid, signal.SIGKILL)
        self._reap()

    def _reap(self) -> None:
        if self._process is not None:  # a scorer handed over is not this process's child
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(timeout=30)


def scorer_env() -> dict[str, str]:
    """The environment a scorer starts with: this process's (a spare is used only for a
    command whose environment matches the one it was started with)."""
    return dict(os.environ)


# A scorer someone else started (the stage server's spare): its socket and log file.
Spare = tuple[socket.socket, Path]


def _new_scorer(spare: Spare | None = None) -> FreshScorer:
    """The scorer of `spare` if given, else one started now."""
    if spare is not None:
        channel, log = spare
        return FreshScorer(channel, log)
    return FreshScorer.start()


# The scorer a register command starts first thing (`start_scorer_ahead`), before it looks up
# whether there is anything to register: the next `started_scorer()` in this process takes it.
_AHEAD: list[FreshScorer] = []


def start_scorer_ahead(spare: Spare | None = None) -> None:
    """Start this process's scorer now (or take `spare`), so that its imports overlap whatever
    the process does before it registers; `stop_scorer_ahead` if it turns out there is nothing
    to register."""
    if _AHEAD and spare is not None:
        _new_scorer(spare).close()
    elif not _AHEAD:
        _AHEAD.append(_new_scorer(spare))
        atexit.register(stop_scorer_ahead)  # a stage that fails before it registers


def stop_scorer_ahead() -> None:
    while _AHEAD:
        _AHEAD.pop().close()


@contextmanager
def started_scorer() -> Iterator[FreshScorer]:
    """A `FreshScorer` started now (or the one started ahead), stopped at the end of the block
    if it was not used."""
    scorer = _AHEAD.pop() if _AHEAD else _new_scorer()
    try:
        yield scorer
    finally:
        scorer.close()


def score_in_fresh_process(
    jobs: Sequence[tuple[str, Path]], scorer: FreshScorer | None = None
) -> list[np.ndarray | str]:
    """Load each `(model_uri, inputs.npy)` in one new Python process (`scorer`, if one was
    started ahead of time) and predict. Returns, per job, the predictions (float64) or the
    error that stopped that model, as text."""
    return (scorer or _new_scorer()).score(jobs)
