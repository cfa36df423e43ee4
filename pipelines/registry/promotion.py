"""Champion/challenger checks that run after the absolute gate: is the new version shown to be
not worse than the current champion (by more than a margin) on the same test rows, and does it
serve the pipeline's own predictions from a fresh process?"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipelines.config import METRIC_DIRECTIONS
from pipelines.registry import tracking

GOLDEN_ROWS = 32


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str


def _row_terms(metric: str, y: np.ndarray, outputs: np.ndarray) -> np.ndarray:
    """Per-row values whose mean is the metric (rmse: the mean is rooted after)."""
    if metric == "accuracy":
        return (outputs.argmax(axis=1) == y).astype("float64")
    if metric == "log_loss":
        p = outputs[np.arange(len(y)), y.astype(int)]
        return -np.log(np.clip(p, 1e-15, 1.0))
    error = outputs.ravel() - y
    if metric == "mae":
        return np.abs(error)
    if metric == "rmse":
        return error**2
    if metric == "mape":
        return np.abs(error) / np.maximum(np.abs(y), 1e-12)
    raise ValueError(f"{metric!r} cannot be compared row by row")


def _finish(metric: str, means: np.ndarray) -> np.ndarray:
    return np.sqrt(means) if metric == "rmse" else means


def non_inferiority_check(
    metric: str,
    y: np.ndarray,
    champion: np.ndarray,
    challenger: np.ndarray,
    margin: float,
    alpha: float,
    resamples: int,
    seed: int,
    chunk_cells: int = 4_000_000,
) -> Check:
    """Is the challenger shown to be not worse than the champion by more than `margin` (a
    share of the champion's `metric`), on the same rows? A paired bootstrap over rows gives
    the distribution of how much worse the challenger is (champion minus challenger for a
    metric where higher is better); its one-sided (1 - alpha) upper bound must stay below the
    margin. Resamples are drawn in chunks of at most `chunk_cells` row indices, so memory
    stays bounded whatever the number of rows."""
    a, b = _row_terms(metric, y, champion), _row_terms(metric, y, challenger)
    sign = 1.0 if METRIC_DIRECTIONS[metric] == "max" else -1.0
    champion_value, challenger_value = (
        float(_finish(metric, a.mean())),
        float(_finish(metric, b.mean())),
    )
    allowed = margin * abs(champion_value)
    rng = np.random.default_rng(seed)
    n, per_chunk = len(y), max(1, chunk_cells // max(1, len(y)))
    worse_by = []
    for start in range(0, resamples, per_chunk):
        rows = rng.integers(0, n, size=(min(per_chunk, resamples - start), n))
        worse_by.append(
            sign * (_finish(metric, a[rows].mean(axis=1)) - _finish(metric, b[rows].mean(axis=1)))
        )
    bound = float(np.quantile(np.concatenate(worse_by), 1 - alpha))
    passed = bound <= 0 or bound < allowed
    detail = (
        f"{metric}: champion {champion_value:.4f}, challenger {challenger_value:.4f}; "
        f"{100 * (1 - alpha):.0f}% upper bound of how much worse the challenger is "
        f"{bound:+.4f}, margin {allowed:.4f} ({margin:g} of the champion's {metric}); "
        f"paired bootstrap, {resamples} resamples of {n} test rows"
    )
    if metric == "accuracy":
        lost = int(np.sum((a == 1) & (b == 0)))
        won = int(np.sum((a == 0) & (b == 1)))
        detail += f"; challenger wrong where champion right on {lost}, the reverse on {won}"
    if not passed:
        detail = "not shown to be within the margin of the champion: " + detail
    return Check("champion", passed, detail)


def compare_with_champion(
    champion_scores: np.ndarray | str,
    y_test: np.ndarray,
    challenger: np.ndarray,
    metric: str,
    margin: float,
    alpha: float,
    resamples: int,
    seed: int,
) -> Check:
    """Compare the current champion's predictions on the challenger's test rows with the
    challenger's, paired (`non_inferiority_check`). `champion_scores` is the error text when
    the champion could not score those rows (it may expect another schema)."""
    if isinstance(champion_scores, str):
        return Check(
            "champion",
            True,
            f"current champion cannot score the new test data ({champion_scores[:200]}); "
            "not comparable, so not held against the challenger",
        )
    champion = np.asarray(champion_scores, dtype="float64")
    return non_inferiority_check(
        metric, y_test, champion, np.asarray(challenger, "float64"), margin, alpha, resamples, seed
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
