"""The repo's GX suite, run for real: the real data passes, each damage kind fails by name."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from pipelines.config import parse_config
from pipelines.data.suite_drafting import propose_suite
from pipelines.data.validation import ValidationFailed, check_dataset, validate_frame
from tests.conftest import REPO


def _write(df, tmp_path):
    path = tmp_path / "data.parquet"
    df.to_parquet(path, index=False)
    return path


def validate_file(dataset: str, data_path, suite_path, report_dir):
    """What the validate stage does with a file before drift and MLflow: the suite, Data Docs,
    the summary, and `ValidationFailed` naming every failure."""
    cfg = parse_config(yaml.safe_load((REPO / "params.yaml").read_text()))
    report = check_dataset(cfg, dataset, data_path, suite_path, report_dir, reference=None)
    if not report.success:
        raise report.error(data_path, suite_path)
    return report


def test_real_data_passes_and_writes_data_docs(breast_cancer, suite_path, tmp_path):
    report = validate_file(
        "breast_cancer", _write(breast_cancer, tmp_path), suite_path, tmp_path / "docs"
    )
    assert report.success and report.evaluated > 60
    assert (tmp_path / "docs" / "index.html").is_file()
    assert list((tmp_path / "docs" / "validations").rglob("*.html"))
    summary = json.loads((tmp_path / "docs" / "summary.json").read_text())
    assert summary["success"] is True


def _damage_missing_column(df):
    return df.drop(columns=["mean_area"])


def _damage_nulls(df):
    df.loc[[3, 7, 11], "worst_texture"] = np.nan
    return df


def _damage_out_of_range(df):
    df.loc[5, "mean_radius"] = 400.0
    return df


def _damage_label(df):
    df.loc[0, "target"] = 7
    return df


def _damage_too_few_rows(df):
    return df.head(20)


def _damage_type(df):
    df["mean_smoothness"] = df["mean_smoothness"].astype(str)
    return df


@pytest.mark.parametrize(
    ("damage", "expectation", "column"),
    [
        (_damage_missing_column, "expect_table_columns_to_match_ordered_list", None),
        (_damage_nulls, "expect_column_values_to_not_be_null", "worst_texture"),
        (_damage_out_of_range, "expect_column_values_to_be_between", "mean_radius"),
        (_damage_label, "expect_column_values_to_be_in_set", "target"),
        (_damage_too_few_rows, "expect_table_row_count_to_be_between", None),
        (_damage_type, "expect_column_values_to_be_of_type", "mean_smoothness"),
    ],
)
def test_each_failure_kind_is_named(
    breast_cancer, suite_path, tmp_path, damage, expectation, column
):
    with pytest.raises(ValidationFailed) as err:
        validate_file(
            "breast_cancer", _write(damage(breast_cancer), tmp_path), suite_path, tmp_path / "docs"
        )
    message = str(err.value)
    assert expectation in message
    if column:
        assert f"column {column!r}" in message
    assert (tmp_path / "docs" / "index.html").is_file(), "failed runs still get Data Docs"


def test_failure_message_shows_offending_values(breast_cancer, suite_path, tmp_path):
    with pytest.raises(ValidationFailed, match=r"1 of 569 values unexpected, e\.g\. \[400\.0\]"):
        validate_file(
            "breast_cancer",
            _write(_damage_out_of_range(breast_cancer), tmp_path),
            suite_path,
            tmp_path / "docs",
        )


def test_proposed_suite_accepts_its_reference_and_rejects_damage(breast_cancer, tmp_path):
    suite = propose_suite(breast_cancer, "bc", "target", "reference.parquet")
    kinds = {e["type"] for e in suite["expectations"]}
    assert {
        "expect_table_columns_to_match_ordered_list",
        "expect_column_values_to_not_be_null",
        "expect_column_values_to_be_between",
        "expect_column_values_to_be_in_set",
        "expect_table_row_count_to_be_between",
        "expect_column_values_to_be_of_type",
    } <= kinds
    assert suite["meta"]["status"].startswith("draft")
    path = tmp_path / "bc.json"
    path.write_text(json.dumps(suite))
    assert validate_frame(breast_cancer, "bc", path, tmp_path / "ok").success
    bad = validate_frame(_damage_label(breast_cancer), "bc", path, tmp_path / "bad")
    assert not bad.success
    assert [f.column for f in bad.failures] == ["target"]


@pytest.fixture(scope="module")
def repo_suites(repo_root):
    return repo_root / "gx" / "expectations"


def test_digits_suite_accepts_digits_and_rejects_a_wrong_shape(repo_suites, tmp_path):
    from pipelines.data.datasets import load_source

    digits = load_source("sklearn:digits")
    assert validate_frame(digits, "digits", repo_suites / "digits.json", tmp_path / "a").success
    wrong_shape = digits.drop(columns=[c for c in digits.columns if c.startswith("pixel_7_")])
    report = validate_frame(wrong_shape, "digits", repo_suites / "digits.json", tmp_path / "b")
    assert not report.success
    assert "expect_table_columns_to_match_ordered_list" in {f.expectation for f in report.failures}
    bright = digits.copy()
    bright.loc[0, "pixel_3_3"] = 255.0
    report = validate_frame(bright, "digits", repo_suites / "digits.json", tmp_path / "c")
    assert [(f.expectation, f.column) for f in report.failures] == [
        ("expect_column_values_to_be_between", "pixel_3_3")
    ]


def test_co2_suite_allows_its_gaps_but_not_duplicate_or_unordered_weeks(repo_suites, tmp_path):
    from pipelines.data.datasets import load_source

    co2 = load_source("statsmodels:co2")
    assert validate_frame(co2, "co2", repo_suites / "co2.json", tmp_path / "a").success
    duplicated = pd.concat([co2, co2.iloc[[100]]]).reset_index(drop=True)
    report = validate_frame(duplicated, "co2", repo_suites / "co2.json", tmp_path / "b")
    failed = {f.expectation for f in report.failures}
    assert {"expect_column_values_to_be_unique", "expect_column_values_to_be_increasing"} <= failed
    mostly_missing = co2.copy()
    mostly_missing.loc[: len(co2) // 4, "co2"] = np.nan
    report = validate_frame(mostly_missing, "co2", repo_suites / "co2.json", tmp_path / "c")
    assert ("expect_column_values_to_not_be_null", "co2") in {
        (f.expectation, f.column) for f in report.failures
    }
