"""Scoring registered models in a fresh interpreter that imports only MLflow and NumPy, as
`mlflow models serve` does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipelines.registry.tracking.connection import tracking_uri

# Runs in a fresh interpreter that imports only mlflow and numpy, as `mlflow models serve` does.
# It loads each model and scores its input file; one process serves all the checks of a
# registration, so TensorFlow is imported once for them.
_SCORE_SCRIPT = """
import json, os, sys
import numpy as np
import mlflow
mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
for model_uri, inputs, output in json.loads(sys.stdin.read()):
    try:
        got = mlflow.pyfunc.load_model(model_uri).predict(np.load(inputs))
        np.save(output, np.asarray(got, dtype="float64"))
    except Exception as err:
        print(json.dumps({"model": model_uri, "error": f"{type(err).__name__}: {err}"[:500]}))
assert "pipelines" not in sys.modules
"""


def score_in_fresh_process(jobs: Sequence[tuple[str, Path]]) -> list[np.ndarray | str]:
    """Load each `(model_uri, inputs.npy)` in one new Python process and predict. Returns, per
    job, the predictions (float64) or the error that stopped that model, as text."""
    with tempfile.TemporaryDirectory() as tmp:
        outputs = [Path(tmp) / f"{i}.npy" for i in range(len(jobs))]
        spec = [
            [uri, str(inputs), str(out)] for (uri, inputs), out in zip(jobs, outputs, strict=True)
        ]
        # The URI (it may hold a password) goes in the environment, never on the command line,
        # which any local user can read (`ps`); the jobs go in on stdin.
        proc = subprocess.run(
            [sys.executable, "-c", _SCORE_SCRIPT],
            input=json.dumps(spec),
            env={**os.environ, "MLFLOW_TRACKING_URI": tracking_uri()},
            capture_output=True,
            text=True,
            timeout=600,
        )
        errors = {}
        for line in proc.stdout.splitlines():
            if line.startswith('{"model"'):
                record = json.loads(line)
                errors[record["model"]] = record["error"]
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:]
            return [errors.get(uri, f"the scoring process failed: {tail}") for uri, _ in jobs]
        return [
            np.load(out) if out.exists() else errors.get(uri, "no predictions written")
            for (uri, _), out in zip(jobs, outputs, strict=True)
        ]
