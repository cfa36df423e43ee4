"""Bad requests to the registered model, tried for real through the champion's pyfunc: each
gets a clear error that names the problem; good requests in every accepted form agree."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.bad_input import NAME, registered_project, registry_state


@pytest.fixture(scope="module")
def project(tmp_path_factory, raw_params, repo_root):
    with registered_project(tmp_path_factory, raw_params, repo_root) as root:
        yield root


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
    before = registry_state()
    with pytest.raises(MlflowException) as err:
        champion.predict(make(rows))
    assert err.value.error_code == "INVALID_PARAMETER_VALUE"
    assert fragment in err.value.message
    assert err.value.message.startswith(f"{NAME}: ")
    assert registry_state() == before


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
