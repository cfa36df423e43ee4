"""One registry of model families and one shared path that turns a family's body into a
complete, compiled model with its preprocessing inside.

A family contributes only two things: a pydantic schema for its hyperparameters and a function
that builds its body from a (preprocessed) input tensor. `build_model` adds the rest:

    raw input -> preprocessing for the modality -> family body -> output head -> compile

Keras is imported inside functions so that reading the registry (for config validation)
costs no TensorFlow import.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    import keras

    from pipelines.config import TrainConfig
    from pipelines.preprocessing import Preprocessing

MODALITIES = ("tabular", "images", "sequence")


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Activation = Literal["relu", "gelu", "tanh", "elu", "selu", "swish"]


class DenseParams(_Params):
    units: list[Annotated[int, Field(ge=1)]] = Field(default=[64, 32], min_length=1)
    activation: Activation = "relu"
    dropout: float = Field(0.2, ge=0, lt=1)
    l2: float = Field(0.0, ge=0)


def _dense_body(x: keras.KerasTensor, p: DenseParams) -> keras.KerasTensor:
    import keras

    reg = keras.regularizers.L2(p.l2) if p.l2 else None
    for i, units in enumerate(p.units):
        x = keras.layers.Dense(
            units, activation=p.activation, kernel_regularizer=reg, name=f"dense_{i}"
        )(x)
        if p.dropout:
            x = keras.layers.Dropout(p.dropout, name=f"dropout_{i}")(x)
    return x


@dataclass(frozen=True)
class FamilySpec:
    name: str
    modalities: tuple[str, ...]
    params: type[_Params]
    body: Callable[[Any, Any], Any]


FAMILIES: dict[str, FamilySpec] = {
    spec.name: spec for spec in (FamilySpec("dnn", ("tabular",), DenseParams, _dense_body),)
}


def family_spec(name: str) -> FamilySpec:
    if name not in FAMILIES:
        raise ValueError(f"unknown model family {name!r} (known: {', '.join(FAMILIES)})")
    return FAMILIES[name]


def _normalize_tabular(x: keras.KerasTensor, prep: Preprocessing) -> keras.KerasTensor:
    import keras

    return keras.layers.Normalization(
        mean=prep.stats["mean"], variance=prep.stats["variance"], name="normalize"
    )(x)


# Built-in layers only: a process that has not imported this package (`mlflow models serve`)
# must still be able to load the saved model.
_PREPROCESSORS: dict[str, Callable[[Any, Preprocessing], Any]] = {
    "tabular": _normalize_tabular,
}


def _optimizer(train: TrainConfig) -> keras.optimizers.Optimizer:
    import keras

    optimizers = {
        "adam": keras.optimizers.Adam,
        "adamw": keras.optimizers.AdamW,
        "sgd": keras.optimizers.SGD,
        "rmsprop": keras.optimizers.RMSprop,
    }
    return optimizers[train.optimizer](learning_rate=train.learning_rate)


def build_model(
    family: str, params: BaseModel | dict[str, Any], prep: Preprocessing, train: TrainConfig
) -> keras.Model:
    """A compiled model that takes raw inputs and returns class probabilities."""
    import keras

    spec = family_spec(family)
    if prep.modality not in spec.modalities:
        raise ValueError(f"family {family!r} cannot take {prep.modality} data")
    hparams = params if isinstance(params, spec.params) else spec.params.model_validate(params)
    inputs = keras.Input(shape=tuple(prep.input_shape), name="raw_input", dtype="float32")
    x = _PREPROCESSORS[prep.modality](inputs, prep)
    x = spec.body(x, hparams)
    outputs = keras.layers.Dense(len(prep.classes), activation="softmax", name="probabilities")(x)
    model = keras.Model(inputs, outputs, name=f"{family}_{prep.modality}")
    model.compile(
        optimizer=_optimizer(train),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model
