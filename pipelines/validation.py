"""The one module that talks to Great Expectations (GX Core 1.x).

Suites are GX's own JSON (`gx/expectations/<dataset>.json`), kept in the repo and reviewed like
code. `propose_suite` drafts one from a trusted reference file; a person reviews and commits
it. `validate_file` runs a suite, writes Data Docs and raises with every failed expectation.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from pipelines.datasets import read_table

SUMMARY_FILE = "summary.json"


class ValidationFailed(RuntimeError):
    """The data broke its expectation suite; the message lists every failure."""


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


def _gx():
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
    suite = json.loads(path.read_text())
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


def _describe(result: Any) -> Failure:
    cfg = result.expectation_config
    res = result.result or {}
    column = cfg.kwargs.get("column")
    if res.get("unexpected_count") is not None:
        examples = [v for v in (res.get("partial_unexpected_list") or [])[:5]]
        detail = (
            f"{res['unexpected_count']} of {res.get('element_count')} values unexpected, "
            f"e.g. {examples}"
        )
    elif "observed_value" in res:
        expected = {k: v for k, v in cfg.kwargs.items() if k not in ("column", "batch_id")}
        detail = f"observed {res['observed_value']!r}, expected {expected}"
    elif result.exception_info and result.exception_info.get("raised_exception"):
        detail = f"could not be evaluated: {result.exception_info.get('exception_message')}"
    else:
        detail = f"failed with {res}"
    return Failure(cfg.type, column, detail)


def validate_frame(
    df: pd.DataFrame, dataset: str, suite_path: Path, report_dir: Path
) -> ValidationReport:
    """Run the suite on `df`, write Data Docs under `report_dir` and return the outcome."""
    gx = _gx()
    from great_expectations.data_context.types.base import ProgressBarsConfig

    suite_dict = load_suite(suite_path)
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
    outcome = checkpoint.run(batch_parameters={"dataframe": df})
    results = [r for vr in outcome.run_results.values() for r in vr.results]
    failures = [_describe(r) for r in results if not r.success]
    report = ValidationReport(
        dataset, bool(outcome.success), len(results), failures, str(report_dir / "index.html")
    )
    (report_dir / SUMMARY_FILE).write_text(json.dumps(asdict(report), indent=2, default=str))
    return report


def validate_file(
    dataset: str, data_path: Path, suite_path: Path, report_dir: Path
) -> ValidationReport:
    """Validate a data file; raise `ValidationFailed` naming every failed expectation."""
    report = validate_frame(read_table(data_path), dataset, suite_path, report_dir)
    if not report.success:
        lines = "\n".join(f"  - {f}" for f in report.failures)
        raise ValidationFailed(
            f"{data_path} failed {len(report.failures)} of {report.evaluated} expectations "
            f"in {suite_path}:\n{lines}\nData Docs: {report.docs}"
        )
    print(
        f"validated {data_path}: {report.evaluated} expectations passed; Data Docs: {report.docs}"
    )
    return report


def _round_out(value: float, up: bool) -> float:
    """Round a bound outwards to 3 significant digits, so the suite reads well."""
    if value == 0 or not math.isfinite(value):
        return float(value)
    digits = 2 - math.floor(math.log10(abs(value)))
    scale = 10.0**digits
    return (math.ceil if up else math.floor)(value * scale) / scale


def propose_suite(
    df: pd.DataFrame,
    dataset: str,
    label: str,
    source: str,
    modality: str = "tabular",
    time_column: str | None = None,
    margin: float = 0.1,
) -> dict[str, Any]:
    """Draft a suite from a trusted reference table.

    Every modality gets the schema (ordered columns, types), row-count bounds and value ranges.
    Tabular data: no nulls, ranges widened by `margin` of the observed range, the label set.
    Images: no nulls, pixel values within the observed range (not widened), the label set.
    Series: a unique, increasing time column; the value column may miss as many values as the
    reference does (gaps are filled later under `max_gap`), and its range is widened.
    """
    for column in (label, time_column):
        if column and column not in df.columns:
            raise ValueError(f"column {column!r} not in the reference data")

    def expect(kind: str, **kwargs: Any) -> dict[str, Any]:
        return {"type": kind, "kwargs": kwargs, "meta": {}}

    rows = len(df)
    expectations = [
        expect("expect_table_columns_to_match_ordered_list", column_list=list(df.columns)),
        expect(
            "expect_table_row_count_to_be_between", min_value=max(1, rows // 2), max_value=rows * 20
        ),
    ]
    pad_share = 0.0 if modality == "images" else margin
    pixels = [c for c in df.columns if c != label] if modality == "images" else []
    # One range for every pixel: a corner pixel that happens to be always 0 may still be lit.
    pixel_range = (float(df[pixels].min().min()), float(df[pixels].max().max())) if pixels else None
    for column in df.columns:
        series = df[column]
        expectations.append(
            expect("expect_column_values_to_be_of_type", column=column, type_=str(series.dtype))
        )
        present = float(series.notna().mean())
        if modality == "sequence" and column == label and present < 1:
            mostly = math.floor(present * 100) / 100
            expectations.append(
                expect("expect_column_values_to_not_be_null", column=column, mostly=mostly)
            )
        else:
            expectations.append(expect("expect_column_values_to_not_be_null", column=column))
        if column == time_column:
            expectations.append(expect("expect_column_values_to_be_unique", column=column))
            expectations.append(
                expect("expect_column_values_to_be_increasing", column=column, strictly=True)
            )
        elif column == label and modality != "sequence":
            values = sorted(series.dropna().unique().tolist())
            expectations.append(
                expect("expect_column_values_to_be_in_set", column=column, value_set=values)
            )
        elif pd.api.types.is_numeric_dtype(series):
            lo, hi = pixel_range or (float(series.min()), float(series.max()))
            pad = (hi - lo) * pad_share
            low = _round_out(lo - pad, up=False)
            if lo >= 0:
                low = max(low, 0.0)
            expectations.append(
                expect(
                    "expect_column_values_to_be_between",
                    column=column,
                    min_value=low,
                    max_value=_round_out(hi + pad, up=True),
                )
            )
    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    return {
        "name": dataset,
        "expectations": expectations,
        "meta": {
            "proposed_from": source,
            "proposed_on": stamp,
            "status": "draft: review every bound before committing",
        },
    }
