"""The one module that talks to Great Expectations (GX Core 1.x).

Suites are GX's own JSON (`gx/expectations/<dataset>.json`), kept in the repo and reviewed like
code; `pipelines.data.suite_drafting` drafts one from a trusted reference file, without GX, and
a person reviews and commits it.

`check_dataset` is the validate stage's data work: the suite, then the series policy from
params (a regular time index, no gap wider than `max_gap`), then drift against the training
reference it is given (`pipelines.data.drift`). It writes Data Docs, `summary.json` and
`drift.json` under the report folder and returns the outcome; the stage
(`pipelines.orchestration.stages`) fetches the champion's reference and records the run in MLflow.
"""

from __future__ import annotations

import logging
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pandas as pd

from pipelines.config import PipelineConfig
from pipelines.data.datasets import read_table
from pipelines.data.suite_drafting import ROW_COUNT
from pipelines.errors import ValidationFailed

log = logging.getLogger(__name__)

VALIDATION_SUMMARY_FILE = "summary.json"


@dataclass(frozen=True)
class Failure:
    expectation: str
    column: str | None
    detail: str

    def __str__(self) -> str:
        where = f" column {self.column!r}" if self.column else ""
        return f"{self.expectation}{where}: {self.detail}"


@dataclass(frozen=True)
class ValidationReport:
    dataset: str
    success: bool
    evaluated: int
    failures: list[Failure] = field(default_factory=list)
    docs: str | None = None
    warnings: list[Failure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    rows: int = 0
    metrics: dict[str, float] = field(default_factory=dict)

    def error(self, data_path: Path, suite_path: Path) -> ValidationFailed:
        lines = "\n".join(f"  - {f}" for f in self.failures)
        return ValidationFailed(
            f"{data_path} failed {len(self.failures)} of {self.evaluated} checks "
            f"(suite {suite_path}):\n{lines}\nData Docs: {self.docs}"
        )

    def save(self, report_dir: Path) -> None:
        (report_dir / VALIDATION_SUMMARY_FILE).write_text(json.dumps(asdict(self), indent=2, default=str))


def _gx() -> ModuleType:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx

    return gx


def load_suite(path: Path) -> dict[str, Any]:
    """Read a suite file, checking it has the shape GX writes."""
    if not path.is_file():
        raise FileNotFoundError(
            f"expectation suite not found: {path} "
            f"(draft one with `pipelines propose-suite`, review it, commit it)"
        )
    suite: dict[str, Any] = json.loads(path.read_text())
    if not isinstance(suite.get("expectations"), list) or not suite["expectations"]:
        raise ValueError(f"{path}: not an expectation suite (no 'expectations' list)")
    return suite


def _build_suite(gx: Any, suite: dict[str, Any]) -> Any:
    from great_expectations.expectations.expectation_configuration import (
        ExpectationConfiguration,
    )

    expectations = [
        ExpectationConfiguration(
            type=e["type"], kwargs=e["kwargs"], meta=e.get("meta") or {}
        ).to_domain_obj()
        for e in suite["expectations"]
    ]
    return gx.ExpectationSuite(
        name=suite["name"], expectations=expectations, meta=suite.get("meta") or {}
    )


def _column_diff(observed: list[str], expected: list[str]) -> str:
    missing = [c for c in expected if c not in observed]
    extra = [c for c in observed if c not in expected]
    parts = []
    if missing:
        parts.append(f"missing {len(missing)} column(s) {missing[:8]}")
    if extra:
        parts.append(f"unexpected {len(extra)} column(s) {extra[:8]}")
    if not parts:
        at = next(i for i, (a, b) in enumerate(zip(observed, expected, strict=False)) if a != b)
        parts.append(f"out of order: {observed[at]!r} at position {at}, not {expected[at]!r}")
    return f"{'; '.join(parts)} (expected {len(expected)} columns, got {len(observed)})"


def _non_numeric_examples(df: pd.DataFrame, failure: Failure) -> Failure:
    """A type failure on a column that should be numeric: show a few values that are not."""
    column = failure.column
    if column not in df.columns or pd.api.types.is_numeric_dtype(df[column]):
        return failure
    values = df[column]
    bad = values[pd.to_numeric(values, errors="coerce").isna() & values.notna()]
    if not len(bad):
        return failure
    examples = bad.drop_duplicates().head(5).tolist()
    detail = f"{failure.detail}; {len(bad)} value(s) are not numbers, e.g. {examples}"
    return Failure(failure.expectation, column, detail)


def _exception_message(info: Any) -> str | None:
    """GX keeps evaluation errors flat or keyed by metric; return the first message."""
    if not isinstance(info, dict):
        return None
    if info.get("exception_message"):
        return str(info["exception_message"]).strip().splitlines()[-1][:300]
    for inner in info.values():
        found = _exception_message(inner)
        if found:
            return found
    return None


def _short(value: Any, chars: int = 80) -> str:
    """An example value for a message: a long document is cut to its first `chars` characters."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k!r}: {_short(v, chars // 2)}" for k, v in value.items()) + "}"
    text = repr(value)
    return text if len(text) <= chars else text[: chars - 4] + "...'"


def _describe(result: Any) -> Failure:
    cfg = result.expectation_config
    res = result.result or {}
    column = cfg.kwargs.get("column")
    if cfg.type == "expect_table_columns_to_match_ordered_list" and "observed_value" in res:
        detail = _column_diff(res["observed_value"], cfg.kwargs["column_list"])
        return Failure(cfg.type, None, detail)
    if res.get("unexpected_count") is not None:
        examples = [_short(v) for v in (res.get("partial_unexpected_list") or [])[:5]]
        detail = (
            f"{res['unexpected_count']} of {res.get('element_count')} values unexpected, "
            f"e.g. [{', '.join(examples)}]"
        )
    elif "observed_value" in res:
        expected = {k: v for k, v in cfg.kwargs.items() if k not in ("column", "batch_id")}
        detail = f"observed {res['observed_value']!r}, expected {expected}"
    elif _exception_message(result.exception_info):
        detail = f"could not be evaluated: {_exception_message(result.exception_info)}"
    else:
        detail = f"failed with {res}"
    return Failure(cfg.type, column, detail)


def validate_frame(
    df: pd.DataFrame, dataset: str, suite_path: Path, report_dir: Path
) -> ValidationReport:
    """Run the suite on `df`, write Data Docs under `report_dir` and return the outcome (the
    caller saves the summary, once it has every check)."""
    return validate_frames([(None, lambda: df)], dataset, load_suite(suite_path), report_dir)


def validate_shards(
    shards: list[Path], dataset: str, suite_path: Path, report_dir: Path
) -> ValidationReport:
    """Run the suite on every shard of a sharded dataset, one shard in memory at a time. The
    row-count bounds apply to the whole dataset (counted from the Parquet footers); every
    other expectation holds in each shard, and a failure names the shard."""
    from pipelines.data.streaming import read_shard, row_count

    suite = load_suite(suite_path)
    bounds = [e for e in suite["expectations"] if e["type"] == ROW_COUNT]
    per_shard = {**suite, "expectations": [e for e in suite["expectations"] if e not in bounds]}
    frames = [(shard.name, lambda shard=shard: read_shard(shard)) for shard in shards]
    report = validate_frames(frames, dataset, per_shard, report_dir)
    rows, failures = row_count(shards), list(report.failures)
    for bound in bounds:
        low, high = bound["kwargs"].get("min_value"), bound["kwargs"].get("max_value")
        if (low is not None and rows < low) or (high is not None and rows > high):
            failures.append(
                Failure(
                    ROW_COUNT,
                    None,
                    f"observed {rows} rows in {len(shards)} shards, "
                    f"expected between {low} and {high}",
                )
            )
    return ValidationReport(
        dataset, not failures, report.evaluated + len(bounds), failures, report.docs
    )


def validate_frames(
    frames: Sequence[tuple[str | None, Any]],
    dataset: str,
    suite_dict: dict[str, Any],
    report_dir: Path,
) -> ValidationReport:
    """Run the suite on each `(part, load)` frame in turn (`load()` gives the frame; one is in
    memory at a time) with one GX context, write Data Docs under `report_dir` and return the
    combined outcome; a failure in a named part says which."""
    gx = _gx()
    from great_expectations.data_context.types.base import ProgressBarsConfig

    report_dir = report_dir.resolve()
    report_dir.mkdir(parents=True, exist_ok=True)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    context.add_data_docs_site(
        site_name="reports",
        site_config={
            "class_name": "SiteBuilder",
            "store_backend": {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": str(report_dir),
            },
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        },
    )
    batch = (
        context.data_sources.add_pandas(dataset)
        .add_dataframe_asset(f"{dataset}_table")
        .add_batch_definition_whole_dataframe("whole_table")
    )
    suite = context.suites.add(_build_suite(gx, suite_dict))
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=f"{dataset}_validation", data=batch, suite=suite)
    )
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(
            name=f"{dataset}_checkpoint",
            validation_definitions=[definition],
            actions=[gx.checkpoint.UpdateDataDocsAction(name="data_docs", site_names=["reports"])],
        )
    )
    failures: list[Failure] = []
    evaluated = 0
    for part, load in frames:
        df = load()
        outcome = checkpoint.run(batch_parameters={"dataframe": df})
        results = [r for vr in outcome.run_results.values() for r in vr.results]
        evaluated += len(results)
        for result in results:
            if result.success:
                continue
            failure = _describe(result)
            if failure.expectation == "expect_column_values_to_be_of_type":
                failure = _non_numeric_examples(df, failure)
            if part is not None:
                failure = Failure(failure.expectation, failure.column, f"{part}: {failure.detail}")
            failures.append(failure)
        if part is not None:
            log.info(f"  {part}: {len(df):,} rows, {len(results)} expectations")
        del df, outcome, results  # one frame in memory: free it before the next is read
    return ValidationReport(
        dataset, not failures, evaluated, failures, str(report_dir / "index.html")
    )


# The training reference new data is compared with: ("NAME version N (@champion)", profile).
Reference = tuple[str, dict[str, Any]]


def _drift(
    cfg: PipelineConfig, name: str, df: pd.DataFrame, report_dir: Path, found: Reference | None
) -> tuple[list[Failure], list[str], dict[str, float]]:
    """Drift of `df` against the champion's training reference `found`: (breaches, notes,
    metrics)."""
    from pipelines.data.drift import DRIFT_FILE, drift_features, score_drift

    dataset, limits = cfg.dataset(name), cfg.validation.drift
    if found is None:
        models = cfg.models_of(name)
        return [], [f"drift not checked: no champion of {models} with a training reference yet"], {}
    source, profile = found
    time_column = dataset.series.time_column if dataset.series else None
    if time_column and profile.get("time_end") and time_column in df.columns:
        # A series keeps its history: only the steps after the training span are new.
        times = pd.to_datetime(df[time_column], errors="coerce")
        df = df[times > pd.Timestamp(profile["time_end"])]
        if len(df) < 10:
            return [], [f"drift not checked: {len(df)} steps after the training span"], {}
    features = drift_features(
        df, dataset.modality, dataset.label, time_column, profile.get("vocabulary")
    )
    report = score_drift(profile, features, limits.psi, limits.ks, source)
    report.save(report_dir / DRIFT_FILE)
    breaches = [Failure("drift", f.feature, report.describe(f)) for f in report.breaches]
    worst = max(report.features, key=lambda f: f.psi, default=None)
    note = f"drift against {source}: {len(report.features)} features, {len(breaches)} over limits"
    if worst is not None:
        note += f"; largest PSI {worst.psi:.3f} ({worst.feature})"
    return breaches, [note], report.metrics()


def check_dataset(
    cfg: PipelineConfig,
    name: str,
    data_path: Path,
    suite_path: Path,
    report_dir: Path,
    reference: Reference | None,
) -> ValidationReport:
    """Suite, series policy and drift against `reference`; writes Data Docs and the summary
    either way and returns the outcome (`report.error(...)` names every failure)."""
    from pipelines.data import streaming
    from pipelines.data.series import time_index_problems

    dataset = cfg.dataset(name)
    if streaming.is_sharded(data_path):
        shards = streaming.shard_paths(data_path)
        log.info(f"validating {len(shards)} shard(s) of {data_path}, one at a time")
        suite_report = validate_shards(shards, name, suite_path, report_dir)
        rows = streaming.row_count(shards)
        # Drift is a property of distributions: a seeded sample measures it.
        df = streaming.sample_rows(shards, streaming.SAMPLE_ROWS, cfg.base.seed)
    else:
        df = read_table(data_path)
        suite_report = validate_frame(df, name, suite_path, report_dir)
        rows = len(df)
    failures, evaluated = list(suite_report.failures), suite_report.evaluated
    if dataset.series is not None:
        series = dataset.series
        problems = time_index_problems(df, series.time_column, dataset.label, series.max_gap)
        failures += [Failure(check, column, detail) for check, column, detail in problems]
        evaluated += 3
    breaches, notes, metrics = _drift(cfg, name, df, report_dir.resolve(), reference)
    evaluated += len([k for k in metrics if k.startswith("drift_psi.")])
    warnings: list[Failure] = []
    if cfg.validation.drift.on_drift == "fail":
        failures += breaches
    else:
        warnings += breaches
    report = ValidationReport(
        name, not failures, evaluated, failures, suite_report.docs, warnings, notes, rows, metrics
    )
    report.save(report_dir.resolve())
    for note in notes:
        log.info(note)
    for warning in warnings:
        log.warning(f"{warning}")
    return report
