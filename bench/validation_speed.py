"""Validation speed: the breast-cancer GX suite against the same checks written in pandas.

Usage: .venv/bin/python bench/validation_speed.py [repeats]

Tables of 10k, 100k and 1M rows are made by resampling the real rows with 0.1% multiplicative
noise (so rows stay unique and in range). The suite is the repo's, with the row-count bounds
widened to fit. GX time is the whole `validate_frame` call (context, suite, checkpoint, Data
Docs); pandas time is the same expectations hand-written. Median of `repeats` (default 3).
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

SIZES = (10_000, 100_000, 1_000_000)


def synthesize(base: pd.DataFrame, rows: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    sample = base.iloc[rng.integers(0, len(base), rows)].reset_index(drop=True)
    features = [c for c in base.columns if c != "target"]
    noise = rng.normal(1.0, 0.001, size=(rows, len(features)))
    sample[features] = sample[features].to_numpy() * noise
    return sample


def pandas_checks(df: pd.DataFrame, suite: dict) -> list[str]:
    """The suite's expectations, written by hand; returns the failed ones."""
    failed = []
    for e in suite["expectations"]:
        kind, kw = e["type"], e["kwargs"]
        column = df[kw["column"]] if "column" in kw else None
        if kind == "expect_table_columns_to_match_ordered_list":
            ok = list(df.columns) == kw["column_list"]
        elif kind == "expect_table_row_count_to_be_between":
            ok = kw["min_value"] <= len(df) <= kw["max_value"]
        elif kind == "expect_compound_columns_to_be_unique":
            ok = 1 - df.duplicated(subset=kw["column_list"], keep=False).mean() >= kw["mostly"]
        elif kind == "expect_column_values_to_be_of_type":
            ok = str(column.dtype) == kw["type_"]
        elif kind == "expect_column_values_to_not_be_null":
            ok = column.notna().mean() >= kw.get("mostly", 1.0)
        elif kind == "expect_column_values_to_be_between":
            values = column.dropna()
            ok = bool(values.between(kw["min_value"], kw["max_value"]).all())
        elif kind == "expect_column_values_to_be_in_set":
            ok = bool(column.dropna().isin(kw["value_set"]).all())
        else:
            raise ValueError(f"no pandas version of {kind}")
        if not ok:
            failed.append(kind)
    return failed


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(repeats: int = 3) -> None:
    from pipelines.data.datasets import load_source
    from pipelines.data.validation import validate_frame

    base = load_source("sklearn:breast_cancer")
    suite = json.loads(Path("gx/expectations/breast_cancer.json").read_text())
    for e in suite["expectations"]:
        if e["type"] == "expect_table_row_count_to_be_between":
            e["kwargs"].update(min_value=1, max_value=10**9)
    work = Path(tempfile.mkdtemp())
    suite_path = work / "suite.json"
    suite_path.write_text(json.dumps(suite))
    print(
        f"{len(suite['expectations'])} expectations\n\n| rows | GX (s) | GX rows/s | pandas (s) "
        "| pandas rows/s | GX / pandas time |\n| --- | --- | --- | --- | --- | --- |"
    )
    for rows in SIZES:
        df = synthesize(base, rows)
        report = validate_frame(df, "bench", suite_path, work / "docs")
        assert report.success, report.failures
        assert pandas_checks(df, suite) == []
        docs = work / "docs"
        gx = _median_time(lambda: validate_frame(df, "bench", suite_path, docs), repeats)  # noqa: B023
        pd_time = _median_time(lambda: pandas_checks(df, suite), repeats)  # noqa: B023
        print(
            f"| {rows:,} | {gx:.2f} | {rows / gx:,.0f} | {pd_time:.3f} | {rows / pd_time:,.0f} "
            f"| {gx / pd_time:.1f}x |"
        )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
