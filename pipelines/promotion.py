"""Champion/challenger checks that run after the absolute gate: is the new version not worse
than the current champion on the same test rows, and does it serve the pipeline's own
predictions from a fresh process?"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

GOLDEN_ROWS = 32

# Runs in a fresh interpreter that imports only mlflow and numpy, as `mlflow models serve` does.
_PARITY_SCRIPT = """
import sys
import numpy as np
import mlflow
mlflow.set_tracking_uri(sys.argv[1])
model = mlflow.pyfunc.load_model(sys.argv[2])
got = np.asarray(model.predict(np.load(sys.argv[3])), dtype="float64")
want = np.load(sys.argv[4])
assert "pipelines" not in sys.modules
print(float(np.max(np.abs(got - want))) if got.shape == want.shape else float("inf"))
"""


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str


def mcnemar_check(
    champion_correct: np.ndarray, challenger_correct: np.ndarray, alpha: float
) -> Check:
    """Exact one-sided McNemar test: is the challenger significantly worse on the same rows?"""
    from scipy.stats import binomtest

    losses = int(np.sum(champion_correct & ~challenger_correct))
    wins = int(np.sum(~champion_correct & challenger_correct))
    p = (
        binomtest(losses, losses + wins, 0.5, alternative="greater").pvalue
        if losses + wins
        else 1.0
    )
    worse = losses > wins and p < alpha
    detail = (
        f"McNemar on {len(champion_correct)} test rows: challenger wrong where champion "
        f"right on {losses}, right where champion wrong on {wins}; one-sided p={p:.3g}, "
        f"alpha {alpha}"
    )
    return Check("champion", not worse, detail)


def bootstrap_check(
    champion_error: np.ndarray,
    challenger_error: np.ndarray,
    alpha: float,
    tolerance: float,
    resamples: int,
    seed: int,
) -> Check:
    """Paired bootstrap of the per-row |error| difference (challenger - champion): the
    challenger is worse when even the optimistic `alpha` quantile exceeds `tolerance`."""
    diff = np.abs(challenger_error) - np.abs(champion_error)
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(resamples, len(diff)))].mean(axis=1)
    lower = float(np.quantile(means, alpha))
    worse = lower > tolerance
    detail = (
        f"paired bootstrap ({resamples} resamples) of |error| challenger - champion on "
        f"{len(diff)} test rows: mean {diff.mean():+.4f}, {100 * (1 - alpha):.0f}% "
        f"one-sided lower bound {lower:+.4f}, tolerance {tolerance}"
    )
    return Check("champion", not worse, detail)


def compare_with_champion(
    champion_predict,
    x_test: np.ndarray,
    y_test: np.ndarray,
    challenger: np.ndarray,
    task_type: str,
    alpha: float,
    tolerance: float,
    resamples: int,
    seed: int,
) -> Check:
    """Score the current champion on the challenger's test rows and compare, paired."""
    try:
        champion = np.asarray(champion_predict(x_test), dtype="float64")
    except Exception as err:  # the champion may expect another schema
        return Check(
            "champion",
            True,
            f"current champion cannot score the new test data ({type(err).__name__}); "
            "not comparable, so not held against the challenger",
        )
    if task_type == "classification":
        return mcnemar_check(
            champion.argmax(axis=1) == y_test, challenger.argmax(axis=1) == y_test, alpha
        )
    return bootstrap_check(
        champion.ravel() - y_test, challenger.ravel() - y_test, alpha, tolerance, resamples, seed
    )


def fresh_process_parity(
    tracking_uri: str, model_uri: str, inputs: Path, expected: Path, tolerance: float
) -> Check:
    """Load `model_uri` in a new Python process and compare its predictions on the golden raw
    inputs with the pipeline's."""
    proc = subprocess.run(
        [sys.executable, "-c", _PARITY_SCRIPT, tracking_uri, model_uri, str(inputs), str(expected)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:]
        return Check("parity", False, f"{model_uri} failed to load or predict: {tail}")
    diff = float(proc.stdout.strip().splitlines()[-1])
    return Check(
        "parity",
        diff <= tolerance,
        f"fresh process max |difference| {diff:.3g} on the golden sample (tolerance {tolerance})",
    )
