"""Champion/challenger checks that run after the absolute gate: is the new version not worse
than the current champion on the same test rows, and does it serve the pipeline's own
predictions from a fresh process?"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipelines.registry import tracking

GOLDEN_ROWS = 32


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
    champion_scores: np.ndarray | str,
    y_test: np.ndarray,
    challenger: np.ndarray,
    task_type: str,
    alpha: float,
    tolerance: float,
    resamples: int,
    seed: int,
) -> Check:
    """Compare the current champion's predictions on the challenger's test rows with the
    challenger's, paired. `champion_scores` is the error text when the champion could not
    score those rows (it may expect another schema)."""
    if isinstance(champion_scores, str):
        return Check(
            "champion",
            True,
            f"current champion cannot score the new test data ({champion_scores[:200]}); "
            "not comparable, so not held against the challenger",
        )
    champion = np.asarray(champion_scores, dtype="float64")
    if task_type == "classification":
        return mcnemar_check(
            champion.argmax(axis=1) == y_test, challenger.argmax(axis=1) == y_test, alpha
        )
    return bootstrap_check(
        champion.ravel() - y_test, challenger.ravel() - y_test, alpha, tolerance, resamples, seed
    )


def parity_check(
    model_uri: str,
    got: np.ndarray | str,
    expected: np.ndarray,
    tolerance: float,
    sample: str = "the golden sample",
) -> Check:
    """Fresh-process predictions on raw inputs (by default the golden sample) against the
    pipeline's own."""
    if isinstance(got, str):
        return Check("parity", False, f"{model_uri} failed to load or predict: {got}")
    diff = float(np.max(np.abs(got - expected))) if got.shape == expected.shape else np.inf
    return Check(
        "parity",
        diff <= tolerance,
        f"fresh process max |difference| {diff:.3g} on {sample} (tolerance {tolerance})",
    )


def fresh_process_parity(model_uri: str, inputs: Path, expected: Path, tolerance: float) -> Check:
    """Load `model_uri` in a new Python process and compare its predictions on the golden raw
    inputs with the pipeline's."""
    (got,) = tracking.score_in_fresh_process([(model_uri, inputs)])
    return parity_check(model_uri, got, np.load(expected), tolerance)
