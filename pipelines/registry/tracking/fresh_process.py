"""Scoring registered models in a fresh interpreter that imports only MLflow and NumPy, as
`mlflow models serve` does."""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from pipelines.registry.tracking.connection import tracking_uri

# Runs in a fresh interpreter that imports only mlflow and numpy, as `mlflow models serve` does,
# and Keras, which loading any registered model imports: it does so before it reads its jobs, so
# a process started ahead of time (`started_scorer`) has paid for its imports by the time the
# caller has a model to score. It loads each model and scores its input file; one process serves
# all the checks of a registration, so TensorFlow is imported once for them. The caller waits
# for it to end, so it ends as soon as its answers are written, without the interpreter's
# teardown.
_SCORE_SCRIPT = """
import json, os, sys
import numpy as np
import mlflow
import keras
mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
for model_uri, inputs, output in json.loads(sys.stdin.read()):
    try:
        got = mlflow.pyfunc.load_model(model_uri).predict(np.load(inputs))
        np.save(output, np.asarray(got, dtype="float64"))
    except Exception as err:
        print(json.dumps({"model": model_uri, "error": f"{type(err).__name__}: {err}"[:500]}))
assert "pipelines" not in sys.modules
sys.stdout.flush()
os._exit(0)  # the answers are on disk: skip TensorFlow's teardown (1.5 to 2 s)
"""


class FreshScorer:
    """One fresh interpreter that scores registered models (`_SCORE_SCRIPT`), started when it
    is made: it imports MLflow, NumPy and Keras while the caller gets its models ready, and
    reads its jobs only when `score` is called. Used once; `close` stops it if it never was."""

    def __init__(self) -> None:
        # The URI (it may hold a password) goes in the environment, never on the command line,
        # which any local user can read (`ps`); the jobs go in on stdin.
        self._proc: subprocess.Popen[str] | None = subprocess.Popen(
            [sys.executable, "-c", _SCORE_SCRIPT],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "MLFLOW_TRACKING_URI": tracking_uri()},
            text=True,
        )

    def score(self, jobs: Sequence[tuple[str, Path]]) -> list[np.ndarray | str]:
        """Load each `(model_uri, inputs.npy)` and predict. Returns, per job, the predictions
        (float64) or the error that stopped that model, as text."""
        proc, self._proc = self._proc, None
        if proc is None:
            raise RuntimeError("a FreshScorer scores once")
        with tempfile.TemporaryDirectory() as tmp:
            outputs = [Path(tmp) / f"{i}.npy" for i in range(len(jobs))]
            spec = [
                [uri, str(inputs), str(out)]
                for (uri, inputs), out in zip(jobs, outputs, strict=True)
            ]
            try:
                stdout, stderr = proc.communicate(json.dumps(spec), timeout=600)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
                raise
            errors = {}
            for line in stdout.splitlines():
                if line.startswith('{"model"'):
                    record = json.loads(line)
                    errors[record["model"]] = record["error"]
            if proc.returncode != 0:
                tail = (stderr or stdout).strip().splitlines()[-1:]
                return [errors.get(uri, f"the scoring process failed: {tail}") for uri, _ in jobs]
            return [
                np.load(out) if out.exists() else errors.get(uri, "no predictions written")
                for (uri, _), out in zip(jobs, outputs, strict=True)
            ]

    def close(self) -> None:
        """Stop the process if it was never given its jobs."""
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.kill()
            proc.communicate()


# The scorer a register command starts first thing (`start_scorer_ahead`), before it looks up
# whether there is anything to register: the next `started_scorer()` in this process takes it.
_AHEAD: list[FreshScorer] = []


def start_scorer_ahead() -> None:
    """Start this process's scorer now, so that its imports overlap whatever the process does
    before it registers; `stop_scorer_ahead` if it turns out there is nothing to register."""
    if not _AHEAD:
        _AHEAD.append(FreshScorer())
        atexit.register(stop_scorer_ahead)  # a stage that fails before it registers


def stop_scorer_ahead() -> None:
    while _AHEAD:
        _AHEAD.pop().close()


@contextmanager
def started_scorer() -> Iterator[FreshScorer]:
    """A `FreshScorer` started now (or the one started ahead), stopped at the end of the block
    if it was not used."""
    scorer = _AHEAD.pop() if _AHEAD else FreshScorer()
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
    return (scorer or FreshScorer()).score(jobs)
