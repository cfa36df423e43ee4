"""The gate's one judge: everything that decides whether a registered version may become
`@champion`, for the register stage and for `pipelines promote` alike.

A verdict has three checks: the thresholds and trivial baselines (`gate.apply_gate`); not worse
than the current champion by more than a margin, on test rows that neither model trained or
validated on, with both models' classes matched by name; and serving parity from a fresh
process. The champion check fails closed: a champion that cannot be loaded or cannot score the
rows, a changed schema (other classes or features) or rows that cannot be told apart all refuse
the promotion, with the cause, unless the caller skips the comparison on purpose
(`pipelines promote NAME VERSION --without-comparison`, which is recorded).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipelines.data.preprocessing import Preprocessing, encode_labels, raw_inputs
from pipelines.data.splitting import splits_under
from pipelines.metric_names import METRIC_DIRECTIONS
from pipelines.model.metrics import aggregate, row_terms
from pipelines.model_config import GateConfig
from pipelines.registry.gate import apply_gate
from pipelines.registry.tracking import fresh_process, model_versions

GOLDEN_ROWS = 32
GOLDEN_INPUTS_FILE = "inputs.npy"  # the golden sample: raw inputs, and the answers
GOLDEN_PREDICTIONS_FILE = "predictions.npy"  # the pipeline gave them
SPLIT_TAG = "split"  # a version's tag: the split rule and digests of the data it trained on
WITHOUT_COMPARISON = "--without-comparison"


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class Verdict:
    checks: list[Check]
    failures: list[str]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)


@dataclass(frozen=True)
class Candidate:
    """The version under judgement and what is known of it."""

    name: str
    version: str
    test_metrics: dict[str, float]
    baselines: dict[str, dict[str, float]]
    golden_inputs: Path
    golden_predictions: np.ndarray
    split: dict[str, Any]  # the split rule it trained on (`Preprocessing.split`)
    # Its predictions on every row of the comparison table, when the pipeline has them (the
    # register stage); None: the fresh process scores it (`pipelines promote`).
    predictions: np.ndarray | None = None

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


@dataclass(frozen=True)
class Rows:
    """The current test rows a candidate is compared on: processed split rows (raw feature
    columns, the label, and the key or time column) and the preprocessing of that data."""

    table: pd.DataFrame
    prep: Preprocessing
    notes: list[str] = field(default_factory=list)


class Refusal(Exception):
    """The champion comparison cannot be made; the message says why (fail closed)."""


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
    rows_note: str = "",
) -> Check:
    """Is the challenger shown to be not worse than the champion by more than `margin` (a
    share of the champion's `metric`), on the same rows? A paired bootstrap over rows gives
    the distribution of how much worse the challenger is (champion minus challenger for a
    metric where higher is better); its one-sided (1 - alpha) upper bound must stay below the
    margin. Per-row terms are the reports' own (`pipelines.model.metrics.row_terms`); rows
    where the metric is undefined (MAPE of a zero target) are left out of both. Resamples are
    drawn in chunks of at most `chunk_cells` row indices, so memory stays bounded."""
    a, b = row_terms(metric, y, champion), row_terms(metric, y, challenger)
    defined = ~(np.isnan(a) | np.isnan(b))
    a, b = a[defined], b[defined]
    sign = 1.0 if METRIC_DIRECTIONS[metric] == "max" else -1.0
    champion_value, challenger_value = float(aggregate(metric, a)), float(aggregate(metric, b))
    allowed = margin * abs(champion_value)
    rng = np.random.default_rng(seed)
    n, per_chunk = len(a), max(1, chunk_cells // max(1, len(a)))
    worse_by = []
    for start in range(0, resamples, per_chunk):
        rows = rng.integers(0, n, size=(min(per_chunk, resamples - start), n))
        worse_by.append(
            sign * (aggregate(metric, a[rows], axis=1) - aggregate(metric, b[rows], axis=1))
        )
    bound = float(np.quantile(np.concatenate(worse_by), 1 - alpha))
    passed = bound <= 0 or bound < allowed
    detail = (
        f"{metric}: champion {champion_value:.4f}, challenger {challenger_value:.4f}; "
        f"{100 * (1 - alpha):.0f}% upper bound of how much worse the challenger is "
        f"{bound:+.4f}, margin {allowed:.4f} ({margin:g} of the champion's {metric}); "
        f"paired bootstrap, {resamples} resamples of {n} test rows{rows_note}"
    )
    if metric == "accuracy":
        lost = int(np.sum((a == 1) & (b == 0)))
        won = int(np.sum((a == 0) & (b == 1)))
        detail += f"; challenger wrong where champion right on {lost}, the reverse on {won}"
    if not passed:
        detail = "not shown to be within the margin of the champion: " + detail
    return Check("champion", passed, detail)


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
    (got,) = fresh_process.score_in_fresh_process([(model_uri, inputs)])
    return parity_check(model_uri, got, np.load(expected), tolerance)


def split_rule(split: dict[str, Any]) -> dict[str, Any]:
    """What decides which rows a model trained on: the split's method and its settings,
    without the digests of one particular data set."""
    keep = ("method", "salt", "key", "validation", "test")
    return {k: split.get(k) for k in keep} if split.get("method") != "temporal" else {}


def split_mismatch(candidate: dict[str, Any], current: dict[str, Any]) -> str | None:
    """Why rows the candidate trained on may be among the current test rows (its split rule is
    not the current one), or None. A temporal split needs no match: rows are told apart by
    their time."""
    if not candidate:
        return "it records no split, so the rows it trained on cannot be told apart"
    if candidate.get("method") != current.get("method"):
        theirs, ours = candidate.get("method"), current.get("method")
        return f"it was split by {theirs}, the current data by {ours}"
    theirs, ours = split_rule(candidate), split_rule(current)
    differs = [f"{k} {theirs[k]!r} (current: {ours[k]!r})" for k in theirs if theirs[k] != ours[k]]
    if differs:
        return (
            "it was trained on another split: "
            + ", ".join(differs)
            + "; some current test rows were its training or validation rows (the salt follows "
            "base.seed unless split.salt is set)"
        )
    return None


def _schema_change(champion: dict[str, Any], prep: Preprocessing) -> str | None:
    """What differs between the champion's inputs and outputs and the current data's: other
    features or other classes (matched by name, in any order), or another modality."""
    changes = []
    if champion.get("modality") != prep.modality:
        changes.append(f"modality {champion.get('modality')} -> {prep.modality}")
    for what, theirs, ours in (
        ("features", champion.get("features") or [], prep.features),
        ("classes", champion.get("classes") or [], prep.classes),
    ):
        before, after = {str(v) for v in theirs}, {str(v) for v in ours}
        for change, names in (("added", after - before), ("removed", before - after)):
            if names:
                shown = ", ".join(sorted(names)[:10]) + (", ..." if len(names) > 10 else "")
                changes.append(f"{len(names)} {what} {change} ({shown})")
    return "; ".join(changes) or None


@dataclass(frozen=True)
class _Plan:
    mask: np.ndarray  # comparison rows among the table's
    champion_inputs: np.ndarray  # those rows, as the champion takes them
    columns: list[int] | None  # champion output columns in the candidate's class order
    note: str


def _plan(candidate: Candidate, champion: str, rows: Rows) -> _Plan:
    """Which rows to compare on and how to feed and read the champion; `Refusal` when the
    comparison cannot be made."""
    uri = f"models:/{candidate.name}/{champion}"
    try:
        meta = model_versions.model_metadata(uri)
        recorded = model_versions.version_info(candidate.name, champion).tags.get(SPLIT_TAG)
    except Exception as err:  # any failure to read the champion refuses, naming it
        raise Refusal(
            f"the champion (v{champion}) could not be loaded: {type(err).__name__}: "
            f"{str(err)[:300]}"
        ) from err
    changed = _schema_change(meta, rows.prep)
    if changed:
        raise Refusal(
            f"schema change against the champion (v{champion}): {changed}; the two cannot be "
            f"compared. To replace it anyway: pipelines promote {candidate.name} "
            f"{candidate.version} {WITHOUT_COMPARISON}"
        )
    if not recorded:
        raise Refusal(
            f"the champion (v{champion}) records no split (it was registered before splits "
            "were recorded), so the rows it trained on cannot be told apart from test rows. "
            f"To replace it anyway: pipelines promote {candidate.name} {candidate.version} "
            f"{WITHOUT_COMPARISON}"
        )
    table = rows.table
    try:
        mask = splits_under(json.loads(recorded), table, rows.prep) == "test"
        if split_rule(candidate.split) != split_rule(rows.prep.split):
            mask &= splits_under(candidate.split, table, rows.prep) == "test"
    except ValueError as err:
        raise Refusal(
            f"the rows the champion (v{champion}) trained on cannot be told: {err}"
        ) from err
    if not mask.any():
        raise Refusal(
            f"none of the {len(table)} test rows is outside the training and validation data "
            f"of both the champion (v{champion}) and the challenger"
        )
    columns = None
    if rows.prep.classes:
        index = {str(c): i for i, c in enumerate(meta["classes"])}
        columns = [index[str(c)] for c in rows.prep.classes]
    note = (
        f" (the {int(mask.sum())} of {len(table)} current test rows that neither model trained "
        "or validated on)"
    )
    inputs = raw_inputs(table[mask], meta["features"], meta["input_shape"])
    return _Plan(mask, inputs, columns, note)


def judge(
    gate: GateConfig,
    candidate: Candidate,
    champion: str | None,
    rows: Rows,
    seed: int,
    skip_comparison: str | None = None,
    scorer: fresh_process.FreshScorer | None = None,
) -> Verdict:
    """Every check of the gate for `candidate` against `champion` (a version, or None when
    there is none), scored in one fresh process (as `mlflow models serve` loads a model).
    `skip_comparison`: why the champion comparison is left out on purpose (recorded in the
    check); `scorer`: a fresh process started ahead of time. Never raises for a failed
    check: a comparison that cannot be made is a failed check naming the cause (fail
    closed)."""
    primary = gate.primary(rows.prep.task_type)
    thresholds = apply_gate(gate, candidate.test_metrics, candidate.baselines, primary)
    plan: _Plan | Check | None = None
    if champion is None:
        plan = Check("champion", True, "no champion yet")
    elif skip_comparison:
        plan = Check(
            "champion", True, f"not compared with the champion (v{champion}): {skip_comparison}"
        )
    else:
        try:
            plan = _plan(candidate, champion, rows)
        except Refusal as why:
            plan = Check("champion", False, str(why))
        except Exception as err:  # a bug or a bad file never lets a challenger through
            plan = Check(
                "champion",
                False,
                f"the comparison with the champion (v{champion}) failed: "
                f"{type(err).__name__}: {str(err)[:300]}",
            )
    with tempfile.TemporaryDirectory() as tmp:
        jobs = [(candidate.uri, candidate.golden_inputs)]
        if isinstance(plan, _Plan):
            np.save(Path(tmp) / "champion.npy", plan.champion_inputs)
            jobs.append((f"models:/{candidate.name}/{champion}", Path(tmp) / "champion.npy"))
            if candidate.predictions is None:
                ours = raw_inputs(rows.table[plan.mask], rows.prep.features, rows.prep.input_shape)
                np.save(Path(tmp) / "candidate.npy", ours)
                jobs.append((candidate.uri, Path(tmp) / "candidate.npy"))
        scores = fresh_process.score_in_fresh_process(jobs, scorer)
    parity = parity_check(
        candidate.uri, scores[0], candidate.golden_predictions, gate.parity_tolerance
    )
    if isinstance(plan, _Plan):
        versus = _compare(gate, candidate, champion, rows, plan, scores[1:], primary, seed)
    else:
        versus = plan
    checks = [Check("thresholds", thresholds.passed, "; ".join(thresholds.checks)), versus, parity]
    failures = [
        *thresholds.failures,
        *(f"{c.name}: {c.detail}" for c in (versus, parity) if not c.passed),
    ]
    return Verdict(checks, failures)


def _compare(
    gate: GateConfig,
    candidate: Candidate,
    champion: str | None,
    rows: Rows,
    plan: _Plan,
    scores: list[Any],
    primary: str,
    seed: int,
) -> Check:
    theirs = scores[0]
    ours = candidate.predictions[plan.mask] if candidate.predictions is not None else scores[1]
    if isinstance(theirs, str):
        return Check(
            "champion",
            False,
            f"the champion (v{champion}) could not score the comparison rows: {theirs[:300]}",
        )
    if isinstance(ours, str):
        return Check(
            "champion", False, f"{candidate.uri} cannot score the current test rows: {ours}"
        )
    try:
        if plan.columns is not None:
            theirs = np.asarray(theirs)[:, plan.columns]
        y = encode_labels(rows.table[rows.prep.label].to_numpy()[plan.mask], rows.prep)
        return non_inferiority_check(
            primary,
            y,
            np.asarray(theirs, "float64"),
            np.asarray(ours, "float64"),
            gate.champion_margin,
            gate.champion_alpha,
            gate.bootstrap_resamples,
            seed,
            rows_note=plan.note,
        )
    except Exception as err:  # fail closed
        return Check(
            "champion",
            False,
            f"the comparison with the champion (v{champion}) failed: {type(err).__name__}: "
            f"{str(err)[:300]}",
        )
