"""A series' time index: its gaps and irregular steps (the validate stage's series policy),
gaps filled up to `max_gap`, and the columns of a supervised window."""

from __future__ import annotations

import logging
import numpy as np
import pandas as pd

from pipelines.errors import DataError

log = logging.getLogger(__name__)


def _longest_gap(values: pd.Series) -> tuple[int, int]:
    """(length, start position) of the longest run of missing values."""
    missing = values.isna().reset_index(drop=True)
    run_id = (missing != missing.shift()).cumsum()
    run_length = missing.groupby(run_id).transform("size").where(missing, 0)
    longest = int(run_length.max()) if len(run_length) else 0
    return longest, int(np.argmax(run_length.to_numpy() == longest)) if longest else 0


def time_index_problems(
    df: pd.DataFrame, time_column: str, value: str, max_gap: int
) -> list[tuple[str, str, str]]:
    """The series policy, as (check, column, detail) for each broken rule: the time index is
    strictly increasing with one regular step, and no run of missing values is longer than
    `max_gap` (shorter ones are filled by interpolation)."""
    if time_column not in df.columns or value not in df.columns or len(df) < 2:
        return []  # the expectation suite reports missing columns and too few rows
    times = pd.to_datetime(df[time_column], errors="coerce").reset_index(drop=True)
    steps = times.diff().iloc[1:]
    problems = []
    unreadable = int(times.isna().sum())
    if unreadable:
        problems.append(
            ("time_index_readable", time_column, f"{unreadable} value(s) are not dates")
        )
    backwards = (steps <= pd.Timedelta(0)).to_numpy()
    if backwards.any():
        where = times.iloc[1:][backwards]
        problems.append(
            (
                "time_index_strictly_increasing",
                time_column,
                f"{int(backwards.sum())} step(s) go back or repeat, first at {where.iloc[0]}",
            )
        )
    elif len(steps) and steps.notna().all():
        step = steps.mode().iloc[0]
        irregular = (steps != step).to_numpy()
        if irregular.any():
            where = times.iloc[1:][irregular]
            problems.append(
                (
                    "time_index_regular",
                    time_column,
                    f"{int(irregular.sum())} step(s) other than {step}, first at "
                    f"{where.iloc[0]}, e.g. {sorted(set(map(str, steps[irregular])))[:3]} "
                    "(for missing measurements keep the timestamp and leave the value empty)",
                )
            )
    longest, start = _longest_gap(pd.to_numeric(df[value], errors="coerce"))
    if longest > max_gap:
        problems.append(
            (
                "gap_within_max_gap",
                value,
                f"a gap of {longest} missing steps from {times.iloc[start]}; "
                f"the fill policy (series.max_gap) allows at most {max_gap}",
            )
        )
    return problems


def fill_gaps(df: pd.DataFrame, time_column: str, value: str, max_gap: int) -> pd.DataFrame:
    """Check the time index (see `time_index_problems`) and fill runs of at most `max_gap`
    missing values by linear interpolation. A broken rule is an error; missing values at either
    end are dropped."""
    problems = time_index_problems(df, time_column, value, max_gap)
    if problems:
        raise DataError(
            "; ".join(f"{check} ({column}): {detail}" for check, column, detail in problems)
        )
    missing = df[value].isna().reset_index(drop=True)
    longest, _ = _longest_gap(df[value])
    filled = df[[time_column, value]].reset_index(drop=True)
    filled[value] = filled[value].interpolate(method="linear", limit_area="inside")
    filled = filled.dropna(subset=[value]).reset_index(drop=True)
    log.info(
        f"filled {int(missing.sum())} missing values by interpolation "
        f"(longest gap {longest} steps, max_gap {max_gap})"
    )
    return filled


def window_columns(window: int) -> list[str]:
    """Names of the raw window's columns, oldest first: `t-52`, ..., `t-1`."""
    return [f"t-{lag}" for lag in range(window, 0, -1)]
