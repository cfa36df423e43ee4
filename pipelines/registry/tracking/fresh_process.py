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
# Runs in a fresh interpreter that imports only mlflow and numpy, as `mlflow models serve` does,
# and Keras, which loading any registered model imports: it does so before it reads its jobs, so
# a process started ahead of time (`started_scorer`, or a spare the stage server keeps) has paid
# for its imports by the time the caller has a model to score. Its jobs come as one JSON line on
# the socket whose descriptor is its last argument: the tracking URI, the caller's folder, and
# (model URI, inputs, output) triples. It loads each model and scores its input file; one process
# serves all the checks of a registration, so TensorFlow is imported once for them. It answers
# with one JSON line (per job, None or the error that stopped it) and ends at once, without the
# interpreter's teardown.
_SCORE_SCRIPT = f"""
import json, os, signal, socket, sys
signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # as a shell would start it, whoever starts it
channel = socket.socket(fileno=int(sys.argv[-1]))
import numpy as np
import mlflow
import mlflow.pyfunc
import keras
try:  # what the first load would pay for too: the SQL store's module, and the map of installed
    # packages that MLflow checks a model's requirements against (about 1.8 s)
    import mlflow.store.tracking.sqlalchemy_store
    from mlflow.utils.requirements_utils import _init_packages_to_modules_map
    _init_packages_to_modules_map()
except Exception:  # only ever a head start
    pass
channel.settimeout({WAIT_S})
try:
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


class FreshScorer:
    """One fresh interpreter that scores registered models (`_SCORE_SCRIPT`), already started:
    it imports MLflow, NumPy and Keras while the caller gets its models ready, and reads its
    jobs only when `score` is called. Used once; `close` stops it if it never was.

    `FreshScorer.start()` starts one here; the stage server hands over a spare it started
    ahead for a command with this environment (`start_scorer_ahead(spare)` in a register
    command)."""

    def __init__(
        self,
        channel: socket.socket,
        pid: int,
        log: Path,
        process: subprocess.Popen[bytes] | None = None,
    ) -> None:
        self._channel: socket.socket | None = channel
        self._pid, self._log, self._process = pid, log, process

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
        return cls(ours, process.pid, log, process)

    def score(self, jobs: Sequence[tuple[str, Path]]) -> list[np.ndarray | str]:
        """Load each `(model_uri, inputs.npy)` and predict. Returns, per job, the predictions
        (float64) or the error that stopped that model, as text."""
        channel, self._channel = self._channel, None
        if channel is None:
            raise RuntimeError("a FreshScorer scores once")
        with tempfile.TemporaryDirectory() as tmp, channel:
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
                channel.sendall((json.dumps(request) + "\n").encode())
                answer = channel.makefile("rb").readline()
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
        """Stop the process if it was never given its jobs."""
        channel, self._channel = self._channel, None
        if channel is not None:
            channel.close()
            self._stop()
            self._log.unlink(missing_ok=True)

    def _stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self._pid, signal.SIGKILL)
        self._reap()

    def _reap(self) -> None:
        if self._process is not None:  # a spare handed over is the server's child, not ours
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(timeout=30)


def scorer_env() -> dict[str, str]:
    """The environment a scorer starts with: this process's (a spare is used only for a
    command whose environment matches the one it was started with)."""
    return dict(os.environ)


# A scorer someone else started (the stage server's spare): its socket, pid and log file.
Spare = tuple[socket.socket, int, Path]


def _new_scorer(spare: Spare | None = None) -> FreshScorer:
    """The scorer of `spare` if given, else one started now."""
    if spare is not None:
        channel, pid, log = spare
        return FreshScorer(channel, pid, log)
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
