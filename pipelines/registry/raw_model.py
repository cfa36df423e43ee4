"""The registered model's pyfunc wrapper: raw request in, answer in original units out.

MLflow stores this file with every registered version ("models from code") and runs it when the
version is loaded, so it must stand alone: it imports numpy, pandas, keras and mlflow only,
never the `pipelines` package, and nothing is pickled. The Keras model beside it (preprocessing
inside) loads in safe mode.

Before predicting, every request is checked against the training schema the version carries
(`model_config`: feature names, input shape, modality). A bad request gets an
`MlflowException` with INVALID_PARAMETER_VALUE, which `mlflow models serve` answers with HTTP 400
and the message, instead of a stack trace or a silent garbage prediction.
"""

from __future__ import annotations

from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

KERAS_ARTIFACT = "keras_model"


def _bad_request(message: str) -> MlflowException:
    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


def _describe_shape(config: dict[str, Any]) -> str:
    shape = tuple(config["input_shape"])
    features = config["features"]
    if config["modality"] == "tabular":
        names = ", ".join(features[:3]) + (", ..." if len(features) > 3 else "")
        return f"(n, {shape[0]}): rows of {shape[0]} raw features ({names})"
    if config["modality"] == "images":
        return f"(n, {shape[0]}, {shape[1]}): raw pixel arrays"
    return f"(n, {shape[0]}) or (n, {', '.join(map(str, shape))}): raw windows, oldest value first"


def check_texts(model_input: Any, config: dict[str, Any]) -> np.ndarray:
    """Turn a text model's request into an array of strings, or raise naming the problem: an
    empty batch, a nested list, or an item that is not a non-empty string (null, a number)."""
    name = config.get("model_name", "this model")
    column = config["features"][0]
    expected = f"a list of raw strings (or a table with a {column!r} column)"
    if isinstance(model_input, dict):
        model_input = model_input.get(column, next(iter(model_input.values()), []))
    if isinstance(model_input, pd.DataFrame):
        if column in model_input.columns:
            model_input = model_input[column]
        elif model_input.shape[1] == 1:
            model_input = model_input.iloc[:, 0]
        else:
            raise _bad_request(
                f"{name}: request has no {column!r} column (columns: "
                f"{list(model_input.columns)[:5]}); it takes {expected}"
            )
    if isinstance(model_input, str):
        model_input = [model_input]
    items = (
        list(np.asarray(model_input, dtype=object).reshape(-1))
        if not isinstance(model_input, list | pd.Series)
        else list(model_input)
    )
    if not items:
        raise _bad_request(f"{name}: empty batch; send at least one document as {expected}")
    for i, item in enumerate(items):
        if isinstance(item, list | tuple | np.ndarray):
            raise _bad_request(f"{name}: item {i} is a nested list; it takes {expected}")
        if item is None or (isinstance(item, float) and np.isnan(item)):
            raise _bad_request(f"{name}: item {i} is null; every item must be a non-empty string")
        if not isinstance(item, str | np.str_):
            raise _bad_request(
                f"{name}: item {i} is {type(item).__name__} {item!r}, not a string; "
                f"it takes {expected}"
            )
        if not item.strip():
            raise _bad_request(f"{name}: item {i} is an empty string; send the document's text")
    return np.asarray([str(item) for item in items], dtype=str)


def check_request(model_input: Any, config: dict[str, Any]) -> np.ndarray:
    """Turn a request into a float64 batch of shape (n, *input_shape), or raise naming the
    problem: empty batch, missing columns, non-numeric values, wrong shape, NaN or inf. A text
    model's request goes to `check_texts`."""
    if config.get("modality") == "text":
        return check_texts(model_input, config)
    name = config.get("model_name", "this model")
    shape = tuple(int(d) for d in config["input_shape"])
    features = list(config["features"])
    expected = _describe_shape(config)
    if isinstance(model_input, dict):
        # {"inputs": {...}} / {"instances": [{...}]}: one entry, or one array per named column
        if len(model_input) == 1:
            model_input = next(iter(model_input.values()))
        else:
            try:
                model_input = pd.DataFrame(model_input)
            except ValueError as err:
                raise _bad_request(f"{name}: columns of unequal length ({err})") from None
    if isinstance(model_input, pd.DataFrame):
        named = [c for c in model_input.columns if isinstance(c, str)]
        if named:
            missing = [f for f in features if f not in model_input.columns]
            if missing:
                raise _bad_request(
                    f"{name}: request is missing {len(missing)} feature column(s), "
                    f"e.g. {missing[:5]}; it takes {expected}"
                )
            model_input = model_input[features]
        model_input = model_input.to_numpy()
    try:
        batch = np.asarray(model_input)
    except ValueError as err:  # ragged nested lists
        raise _bad_request(f"{name}: rows of unequal length ({err}); it takes {expected}") from None
    if batch.size == 0 or batch.ndim == 0:
        raise _bad_request(f"{name}: empty batch; send at least one row of shape {expected}")
    if batch.dtype.kind == "b":
        raise _bad_request(f"{name}: true/false values; it takes numbers, shape {expected}")
    if batch.dtype.kind not in "iuf":
        flat = batch.reshape(-1)
        for i, value in enumerate(flat):
            if value is None:
                continue  # JSON null: reported below with the NaN values
            try:
                if isinstance(value, bool | np.bool_):
                    raise TypeError("boolean")
                float(value)
            except (TypeError, ValueError):
                value = value.item() if isinstance(value, np.generic) else value
                where = np.unravel_index(i, batch.shape)
                raise _bad_request(
                    f"{name}: non-numeric value {value!r} at index {list(map(int, where))}; "
                    f"it takes numbers, shape {expected}"
                ) from None
        batch = np.where(batch == None, np.nan, batch).astype("float64")  # noqa: E711
    if batch.ndim == 2 and len(shape) > 1 and batch.shape[1] == int(np.prod(shape)):
        batch = batch.reshape(-1, *shape)  # flat rows of an image or a window
    if tuple(batch.shape[1:]) != shape:
        raise _bad_request(f"{name}: input of shape {batch.shape}; it takes {expected}")
    batch = batch.astype("float64", copy=False)
    finite = np.isfinite(batch)
    if not finite.all():
        bad = np.argwhere(~finite)
        row = int(bad[0][0])
        cell = int(np.ravel_multi_index(tuple(bad[0][1:]), shape)) if len(shape) else 0
        feature = features[cell] if cell < len(features) else f"position {cell}"
        raise _bad_request(
            f"{name}: {len(bad)} NaN, null or infinite value(s), first at row {row}, "
            f"feature {feature!r}; every value must be a finite number"
        )
    return batch


CHUNK_ROWS = 4096


# mlflow.pyfunc is loaded by `import mlflow`; its stubs do not say so.
class RawInputModel(mlflow.pyfunc.PythonModel):  # type: ignore[name-defined,misc]
    """The Keras model (preprocessing inside) behind request checks."""

    # No type-hint validation: `check_request` validates every request and names the problem
    # more clearly than a schema derived from type hints would. Without this switch MLflow
    # warns, at class definition, that `predict` has no type hints (in the pipeline and in
    # every process that loads a version). MLflow's own wrappers use the same attribute.
    _skip_type_hint_validation = True

    def load_context(self, context: Any) -> None:
        import keras

        self.config = dict(context.model_config or {})
        self.model = keras.saving.load_model(context.artifacts[KERAS_ARTIFACT], safe_mode=True)

    # No type hints on purpose: MLflow would derive a schema from them and check requests
    # itself, before (and less clearly than) `check_request`.
    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        """The answers, as an array; with `params={"labels": true}`, a classifier's answers
        as a table: the predicted class, then one probability column per class."""
        batch = check_request(model_input, self.config)
        labels = bool((params or {}).get("labels", False))
        classes = self.config.get("classes") or []
        if labels and not classes:
            raise _bad_request(
                f"{self.config.get('model_name', 'this model')}: `labels` is for classifiers; "
                "this model answers with a value in original units"
            )
        # `predict_on_batch` in chunks, not `predict`: `predict` builds a data pipeline on
        # every call (about 50-70 ms), which is most of a small request's time. A request of
        # up to 32 rows is one batch, as in `predict`, so the golden sample matches exactly.
        parts = [
            np.asarray(self.model.predict_on_batch(batch[start : start + CHUNK_ROWS]))
            for start in range(0, len(batch), CHUNK_ROWS)
        ]
        answers = np.concatenate(parts)
        if not labels:
            return answers
        table = pd.DataFrame(answers, columns=[f"probability_{c}" for c in classes])
        table.insert(0, "predicted", np.asarray(classes)[answers.argmax(axis=1)])
        return table


mlflow.models.set_model(RawInputModel())
