"""One registry of model families and one shared path that turns a family's body into a
complete, compiled model with its preprocessing inside.

A family contributes only two things: a pydantic schema for its hyperparameters and a function
that builds its body from a preprocessed input tensor. `build_model` adds the rest:

    raw input -> preprocessing for the modality -> family body -> head for the task type
              -> compile

Only built-in Keras layers and ops are used, so a saved model loads in a process that has never
imported this package (`mlflow models serve`), in safe mode. Keras is imported inside functions
so that reading the registry (for config validation) costs no TensorFlow import.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

if TYPE_CHECKING:
    import keras

    from pipelines.config import TrainConfig
    from pipelines.preprocessing import Preprocessing

MODALITIES = ("tabular", "images", "sequence")
Activation = Literal["relu", "gelu", "tanh", "elu", "selu", "swish"]
PositiveInts = Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=1)]


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- family bodies -----------------------------------------------------------------------


class DenseParams(_Params):
    units: PositiveInts = [64, 32]
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


class ConvParams(_Params):
    filters: PositiveInts = [32, 64]
    kernel_size: int = Field(3, ge=1)
    dense_units: int = Field(64, ge=1)
    dropout: float = Field(0.3, ge=0, lt=1)
    augment: float = Field(
        0.1, ge=0, lt=0.5, description="Random shift, as a share of the image; training only."
    )


def _conv_body(x: keras.KerasTensor, p: ConvParams) -> keras.KerasTensor:
    import keras

    if p.augment:
        # Random layers are identity at inference: augmentation never touches predictions.
        x = keras.layers.RandomTranslation(
            p.augment, p.augment, fill_mode="constant", name="augment_shift"
        )(x)
    for i, filters in enumerate(p.filters):
        x = keras.layers.Conv2D(
            filters, p.kernel_size, padding="same", activation="relu", name=f"conv_{i}"
        )(x)
        if i < len(p.filters) - 1:
            x = keras.layers.MaxPooling2D(2, padding="same", name=f"pool_{i}")(x)
    x = keras.layers.Flatten(name="flatten")(x)  # keep where strokes are, not just which
    x = keras.layers.Dense(p.dense_units, activation="relu", name="dense")(x)
    if p.dropout:
        x = keras.layers.Dropout(p.dropout, name="dropout")(x)
    return x


class RecurrentParams(_Params):
    units: PositiveInts = [32]
    dropout: float = Field(0.0, ge=0, lt=1)


def _lstm_body(x: keras.KerasTensor, p: RecurrentParams) -> keras.KerasTensor:
    import keras

    for i, units in enumerate(p.units):
        last = i == len(p.units) - 1
        x = keras.layers.LSTM(
            units, return_sequences=not last, dropout=p.dropout, name=f"lstm_{i}"
        )(x)
    return x


class TransformerParams(_Params):
    d_model: int = Field(32, ge=2)
    heads: int = Field(4, ge=1)
    ff_units: int = Field(64, ge=1)
    blocks: int = Field(2, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)

    @model_validator(mode="after")
    def _heads_divide(self) -> TransformerParams:
        if self.d_model % self.heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by heads ({self.heads})")
        return self


def _encoder_block(x: keras.KerasTensor, p: TransformerParams, i: int) -> keras.KerasTensor:
    """Post-norm transformer encoder block: self-attention and feed-forward, each with a
    residual connection and layer normalization."""
    import keras

    attended = keras.layers.MultiHeadAttention(
        p.heads, p.d_model // p.heads, dropout=p.dropout, name=f"attention_{i}"
    )(x, x)
    x = keras.layers.LayerNormalization(name=f"norm_attention_{i}")(
        keras.layers.Add(name=f"residual_attention_{i}")([x, attended])
    )
    ff = keras.layers.Dense(p.ff_units, activation="gelu", name=f"ff_in_{i}")(x)
    ff = keras.layers.Dense(p.d_model, name=f"ff_out_{i}")(ff)
    ff = keras.layers.Dropout(p.dropout, name=f"ff_dropout_{i}")(ff)
    return keras.layers.LayerNormalization(name=f"norm_ff_{i}")(
        keras.layers.Add(name=f"residual_ff_{i}")([x, ff])
    )


def _transformer_body(x: keras.KerasTensor, p: TransformerParams) -> keras.KerasTensor:
    import keras

    steps = x.shape[1]
    x = keras.layers.Dense(p.d_model, name="embed")(x)
    # Learned positional embedding; positions 0..steps-1 are derived from the input with Keras
    # ops, so the saved model needs no custom layer.
    positions = keras.ops.cumsum(keras.ops.ones_like(x[..., 0], dtype="int32"), axis=1) - 1
    x = keras.layers.Add(name="add_positions")(
        [x, keras.layers.Embedding(steps, p.d_model, name="positions")(positions)]
    )
    for i in range(p.blocks):
        x = _encoder_block(x, p, i)
    return keras.layers.GlobalAveragePooling1D(name="pool")(x)


@dataclass(frozen=True)
class FamilySpec:
    name: str
    modalities: tuple[str, ...]
    params: type[_Params]
    body: Callable[[Any, Any], Any]


FAMILIES: dict[str, FamilySpec] = {
    spec.name: spec
    for spec in (
        FamilySpec("dnn", ("tabular",), DenseParams, _dense_body),
        FamilySpec("cnn", ("images",), ConvParams, _conv_body),
        FamilySpec("lstm", ("sequence",), RecurrentParams, _lstm_body),
        FamilySpec("transformer", ("sequence",), TransformerParams, _transformer_body),
    )
}


def family_spec(name: str) -> FamilySpec:
    if name not in FAMILIES:
        raise ValueError(f"unknown model family {name!r} (known: {', '.join(FAMILIES)})")
    return FAMILIES[name]


# --- preprocessing per modality, heads per task type ---------------------------------------
# A preprocessor returns the body's input and, for forecasts, the value the head adds back.


def _normalize_tabular(x: keras.KerasTensor, prep: Preprocessing) -> tuple[Any, Any]:
    import keras

    return keras.layers.Normalization(
        mean=prep.stats["mean"], variance=prep.stats["variance"], name="normalize"
    )(x), None


def _rescale_images(x: keras.KerasTensor, prep: Preprocessing) -> tuple[Any, Any]:
    import keras

    height, width = prep.input_shape
    x = keras.layers.Reshape((height, width, 1), name="add_channel")(x)
    return keras.layers.Rescaling(prep.stats["scale"], name="rescale")(x), None


def _scale_window(x: keras.KerasTensor, prep: Preprocessing) -> tuple[Any, Any]:
    """Window relative to its last value, in units of a typical training-span step."""
    import keras

    steps = prep.input_shape[0]
    last = keras.layers.Cropping1D((steps - 1, 0), name="last_value")(x)
    relative = keras.layers.Subtract(name="relative_to_last")([x, last])
    scaled = keras.layers.Rescaling(1.0 / prep.stats["step_scale"], name="scale_window")(relative)
    return scaled, keras.layers.Flatten(name="last_value_flat")(last)


_PREPROCESSORS: dict[str, Callable[[Any, Preprocessing], tuple[Any, Any]]] = {
    "tabular": _normalize_tabular,
    "images": _rescale_images,
    "sequence": _scale_window,
}


def _classification_head(x: Any, _: Any, prep: Preprocessing) -> Any:
    import keras

    return keras.layers.Dense(len(prep.classes), activation="softmax", name="probabilities")(x)


def _forecast_head(x: Any, last: Any, prep: Preprocessing) -> Any:
    """Predicted change, scaled back to original units, added to the last observed value."""
    import keras

    change = keras.layers.Dense(1, name="change")(x)
    change = keras.layers.Rescaling(prep.stats["step_scale"], name="unscale_change")(change)
    return keras.layers.Add(name="forecast")([last, change])


_HEADS = {
    "classification": (_classification_head, "sparse_categorical_crossentropy", ["accuracy"]),
    "regression": (_forecast_head, "mse", ["mae"]),
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
    """A compiled model that takes raw inputs and answers in original terms: class
    probabilities for classification, values in the series' units for forecasts."""
    import keras

    spec = family_spec(family)
    if prep.modality not in spec.modalities:
        raise ValueError(f"family {family!r} cannot take {prep.modality} data")
    hparams = params if isinstance(params, spec.params) else spec.params.model_validate(params)
    inputs = keras.Input(shape=tuple(prep.input_shape), name="raw_input", dtype="float32")
    x, base = _PREPROCESSORS[prep.modality](inputs, prep)
    x = spec.body(x, hparams)
    head, loss, metrics = _HEADS[prep.task_type]
    model = keras.Model(inputs, head(x, base, prep), name=f"{family}_{prep.modality}")
    model.compile(optimizer=_optimizer(train), loss=loss, metrics=metrics)
    return model
