"""Drafting an expectation suite from a trusted reference file (`pipelines propose-suite`): the
table's columns, types, nulls, duplicates, label set and value ranges as GX expectations, in
GX's own JSON, for a person to review and commit. Written without GX: a suite is plain data
until `pipelines.data.validation` runs it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

ROW_COUNT = "expect_table_row_count_to_be_between"


def propose_from_shards(shards: list[Path], dataset: str, label: str, source: str) -> dict[str, Any]:
    """Draft a suite for a sharded dataset in two streaming passes: types, nulls, duplicates
    and the label set from a seeded sample; ranges and row-count bounds from every row."""
    from pipelines.data.streaming import SAMPLE_ROWS, column_ranges, row_count, sample_rows

    suite = propose_suite(
        sample_rows(shards, SAMPLE_ROWS, seed=0),
        dataset,
        label,
        source,
        ranges=column_ranges(shards),
    )
    rows = row_count(shards)
    for expectation in suite["expectations"]:
        if expectation["type"] == ROW_COUNT:
            expectation["kwargs"].update(min_value=max(1, rows // 2), max_value=rows * 20)
    return suite


def _round_out(value: float, up: bool) -> float:
    """Round a bound outwards to 3 significant digits, so the suite reads well."""
    if value == 0 or not math.isfinite(value):
        return float(value)
    digits = 2 - math.floor(math.log10(abs(value)))
    scale = 10.0**digits
    return (math.ceil if up else math.floor)(value * scale) / scale


@dataclass(frozen=True)
class _SuitePolicy:
    """How a drafted suite treats a modality's data."""

    unique_rows: bool  # at most 1% duplicated rows beyond the reference's own
    label_set: bool  # the label column holds only the observed classes
    label_may_miss: bool  # the label may miss as many values as the reference does
    widen_ranges: bool  # ranges widened by `margin` of the observed range
    one_range: bool  # one range for every non-label column (pixels)
    documents: bool = False  # string columns are documents: not blank, lengths within bounds


_POLICIES = {
    "tabular": _SuitePolicy(
        unique_rows=True, label_set=True, label_may_miss=False, widen_ranges=True, one_range=False
    ),
    "images": _SuitePolicy(
        unique_rows=True, label_set=True, label_may_miss=False, widen_ranges=False, one_range=True
    ),
    "sequence": _SuitePolicy(
        unique_rows=False, label_set=False, label_may_miss=True, widen_ranges=True, one_range=False
    ),
    # Duplicates: the split drops exact duplicate texts; the suite caps their share at the
    # reference's own plus one point, so a file that is suddenly mostly copies fails.
    "text": _SuitePolicy(
        unique_rows=True,
        label_set=True,
        label_may_miss=False,
        widen_ranges=False,
        one_range=False,
        documents=True,
    ),
}


def _expect(kind: str, **kwargs: Any) -> dict[str, Any]:
    return {"type": kind, "kwargs": kwargs, "meta": {}}


def _table_expectations(df: pd.DataFrame, policy: _SuitePolicy) -> list[dict[str, Any]]:
    """The schema (ordered columns), row-count bounds and, where it applies, unique rows."""
    rows = len(df)
    expectations = [
        _expect("expect_table_columns_to_match_ordered_list", column_list=list(df.columns)),
        _expect(
            "expect_table_row_count_to_be_between", min_value=max(1, rows // 2), max_value=rows * 20
        ),
    ]
    if policy.unique_rows:
        # GX counts every row of a duplicated group as unexpected, the first one too
        duplicates = float(df.duplicated(keep=False).mean())
        expectations.append(
            _expect(
                "expect_compound_columns_to_be_unique",
                column_list=list(df.columns),
                mostly=max(0.0, math.floor((0.99 - duplicates) * 100) / 100),
            )
        )
    return expectations


def _range_expectation(
    column: str, lo: float, hi: float, margin: float
) -> dict[str, Any]:
    """Values within [lo, hi] widened by `margin` of the range, rounded outwards; never below
    zero for a column that never is."""
    lo, hi = float(lo), float(hi)
    pad = (hi - lo) * margin
    low = _round_out(lo - pad, up=False)
    if lo >= 0:
        low = max(low, 0.0)
    return _expect(
        "expect_column_values_to_be_between",
        column=column,
        min_value=low,
        max_value=_round_out(hi + pad, up=True),
    )


def _column_expectations(
    series: pd.Series,
    label: str,
    time_column: str | None,
    policy: _SuitePolicy,
    margin: float,
    observed: tuple[float, float] | None,
) -> list[dict[str, Any]]:
    """Type, nulls, and then one of: a unique increasing time column, the label set, or the
    value range (`observed` overrides the column's own (min, max))."""
    column = series.name
    expectations = [
        _expect("expect_column_values_to_be_of_type", column=column, type_=str(series.dtype))
    ]
    present = float(series.notna().mean())
    if policy.label_may_miss and column == label and present < 1:
        mostly = math.floor(present * 100) / 100
        expectations.append(
            _expect("expect_column_values_to_not_be_null", column=column, mostly=mostly)
        )
    else:
        expectations.append(_expect("expect_column_values_to_not_be_null", column=column))
    if column == time_column:
        expectations.append(_expect("expect_column_values_to_be_unique", column=column))
        expectations.append(
            _expect("expect_column_values_to_be_increasing", column=column, strictly=True)
        )
    elif column == label and policy.label_set:
        values = sorted(series.dropna().unique().tolist())
        expectations.append(
            _expect("expect_column_values_to_be_in_set", column=column, value_set=values)
        )
    elif pd.api.types.is_numeric_dtype(series):
        lo, hi = observed or (series.min(), series.max())
        pad = margin if policy.widen_ranges else 0.0
        expectations.append(_range_expectation(column, lo, hi, pad))
    elif policy.documents:
        lengths = series.dropna().astype(str).str.len()
        expectations += [
            _expect("expect_column_values_to_not_match_regex", column=column, regex=r"^\s*$"),
            _expect(
                "expect_column_value_lengths_to_be_between",
                column=column,
                min_value=max(1, int(lengths.min()) // 2),
                max_value=int(lengths.max()) * 2,
            ),
        ]
    return expectations


def propose_suite(
    df: pd.DataFrame,
    dataset: str,
    label: str,
    source: str,
    modality: str = "tabular",
    time_column: str | None = None,
    margin: float = 0.1,
    ranges: dict[str, tuple[float, float]] | None = None,
) -> dict[str, Any]:
    """Draft a suite from a trusted reference table.

    Every modality gets the schema (ordered columns, types), row-count bounds and value ranges.
    Tables and images: at most 1% duplicated rows beyond the reference's own.
    Tabular: no nulls, ranges widened by `margin` of the observed range, the label set.
    Images: no nulls, pixel values within the observed range (not widened), the label set.
    Series: a unique, increasing time column; the value column may miss as many values as the
    reference does (gaps are filled later under `max_gap`), and its range is widened.
    `ranges` overrides the observed (min, max) of numeric columns (see `propose_from_shards`).
    """
    for column in (label, time_column):
        if column and column not in df.columns:
            raise ValueError(f"column {column!r} not in the reference data")
    policy = _POLICIES[modality]
    shared = None
    if policy.one_range:
        # One range for every pixel: a corner pixel that happens to be always 0 may still be lit.
        pixels = [c for c in df.columns if c != label]
        shared = (float(df[pixels].min().min()), float(df[pixels].max().max())) if pixels else None
    expectations = _table_expectations(df, policy)
    for column in df.columns:
        observed = shared or (ranges or {}).get(column)
        expectations += _column_expectations(
            df[column], label, time_column, policy, margin, observed
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
