"""One shared path that turns a family's body into a complete, compiled model with its
preprocessing inside.

A family contributes only two things: a pydantic schema for its hyperparameters (in
`pipelines.families`, the registry `config` validates against) and a function here that builds
its body from a preprocessed input tensor. `build_model` adds the rest:

    raw input -> preprocessing for the modality -> family body -> head for the task type
              -> compile

Only built-in Keras layers and ops are used, so a saved model loads in a process that has never
imported this package (`mlflow models serve`), in safe mode. Keras is imported inside functions
so that importing this module costs no TensorFlow import.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from pipelines.families import (
    ConvParams,
    DenseParams,
    FamilyParams,
    RecurrentParams,
    TextDenseParams,
    TextTransformerParams,
    TextVectorizerParams,
    TransformerParams,
    family_spec,
)

if TYPE_CHECKING:
    import keras

    from pipelines.data.preprocessing import Preprocessing
    from pipelines.model_config import TrainConfig

# --- family bodies -----------------------------------------------------------------------


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


def _lstm_body(x: keras.KerasTensor, p: RecurrentParams) -> keras.KerasTensor:
    import keras

    for i, units in enumerate(p.units):
        last = i == len(p.units) - 1
        x = keras.layers.LSTM(
            units, return_sequences=not last, dropout=p.dropout, name=f"lstm_{i}"
        )(x)
    return x


def _encoder_block(
    x: keras.KerasTensor, p: TransformerParams, i: int, mask: Any = None
) -> keras.KerasTensor:
    """Post-norm transformer encoder block: self-attention and feed-forward, each with a
    residual connection and layer normalization. `mask` (batch, steps), true where a step is
    real: attention runs only between real steps, keys and queries alike, so padding never
    changes what a real step sees."""
    import keras

    attention_mask = None
    if mask is not None:
        attention_mask = keras.ops.logical_and(
            keras.ops.expand_dims(mask, 1), keras.ops.expand_dims(mask, 2)
        )
    attended = keras.layers.MultiHeadAttention(
        p.heads, p.d_model // p.heads, dropout=p.dropout, name=f"attention_{i}"
    )(x, x, attention_mask=attention_mask)
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


def _text_dense_body(x: keras.KerasTensor, p: TextDenseParams) -> keras.KerasTensor:
    """TF-IDF weights of the document's words and n-grams (from the vectorizer), scaled to
    unit length, then dense layers. Unscaled, the weights grow with the text's length, and a
    headline's are a small fraction of an article's: unit length puts a five-word text and a
    400-word one on the same scale (as scikit-learn's `TfidfVectorizer` does)."""
    import keras

    x = keras.layers.UnitNormalization(name="unit_length")(x)
    return _dense_body(x, p)


def _text_transformer_body(x: keras.KerasTensor, p: TextTransformerParams) -> keras.KerasTensor:
    """Token ids -> `windows` windows of `sequence_length` tokens -> token and position
    embeddings -> encoder blocks with attention masked by the padding, within each window ->
    mean over every token of the document that is not padding. A short text's answer does not
    depend on how much padding follows it; a long one is read over all its windows."""
    import keras

    ids = keras.ops.reshape(x, (-1, p.sequence_length))  # (documents x windows, tokens)
    # The saved form of a model fitted on fewer windows (`as_saved`) is never trained, so it
    # encodes only the windows that hold a token: a headline costs one window, not `windows`.
    filled_only = p.for_training() != p
    if filled_only:
        has_tokens = keras.ops.any(keras.ops.not_equal(ids, 0), axis=1)
        filled = keras.ops.reshape(keras.ops.nonzero(has_tokens)[0], (-1,))
        ids = keras.ops.take(ids, filled, axis=0)
    padding = keras.ops.not_equal(ids, 0)
    tokens = keras.layers.Embedding(p.max_tokens, p.d_model, name="tokens")(ids)
    positions = keras.ops.cumsum(keras.ops.ones_like(ids, dtype="int32"), axis=1) - 1
    h = keras.layers.Add(name="add_positions")(
        [tokens, keras.layers.Embedding(p.sequence_length, p.d_model, name="positions")(positions)]
    )
    for i in range(p.blocks):
        h = _encoder_block(h, p, i, padding)
    weights = keras.ops.expand_dims(keras.ops.cast(padding, h.dtype), -1)
    summed, counts = keras.ops.sum(h * weights, axis=1), keras.ops.sum(weights, axis=1)
    if filled_only:  # each window's sums to its document's (one that is all padding: 0)
        documents = keras.ops.cumsum(keras.ops.ones_like(x[:, 0]), axis=0) - 1  # 0, 1, ...
        owner = keras.ops.floor_divide(filled, p.windows)
        owns = keras.ops.equal(keras.ops.expand_dims(documents, 1), keras.ops.expand_dims(owner, 0))
        owns = keras.ops.cast(owns, summed.dtype)  # (documents, filled windows)
        summed, counts = keras.ops.matmul(owns, summed), keras.ops.matmul(owns, counts)
    else:
        summed = keras.ops.sum(keras.ops.reshape(summed, (-1, p.windows, p.d_model)), axis=1)
        counts = keras.ops.sum(keras.ops.reshape(counts, (-1, p.windows, 1)), axis=1)
    return summed / keras.ops.maximum(counts, 1.0)


# Each family's body, keyed by its name in `pipelines.families.FAMILIES`.
BODIES: dict[str, Callable[[Any, Any], Any]] = {
    "dnn": _dense_body,
    "cnn": _conv_body,
    "lstm": _lstm_body,
    "transformer": _transformer_body,
    "text-dnn": _text_dense_body,
    "text-transformer": _text_transformer_body,
}


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


# What tokenizers adapted on one set of texts learned, by their settings: the vocabulary and,
# for TF-IDF, the IDF weights. A search fits many models on one training split; each trial's
# tokenizer takes them instead of adapting again (1.3 s for text-dnn's words and bigrams), and
# maps every text exactly as an adapted one does.
Vocabularies = dict[str, tuple[list[str], Any]]


def text_vectorizer(
    p: TextVectorizerParams,
    texts: Any,
    vocabulary: list[str] | None = None,
    adapted: Vocabularies | None = None,
) -> keras.layers.TextVectorization:
    """The tokenizer that lives inside a text model, adapted on the training texts only (or
    given the `vocabulary` one was adapted to, or found in `adapted`, which it adds to): TF-IDF
    over n-grams for the bag of words, token ids (truncated or padded to `windows` x
    `sequence_length`) for the transformer. It is saved in the `.keras` file with its
    vocabulary."""
    import keras
    import tensorflow as tf

    if isinstance(p, TextTransformerParams):
        options = {"output_mode": "int", "output_sequence_length": p.sequence_length * p.windows}
    else:
        options = {"output_mode": "tf_idf", "ngrams": getattr(p, "ngrams", None)}
    settings = {"max_tokens": p.max_tokens, "standardize": p.standardize, **options}
    layer = keras.layers.TextVectorization(name="tokenize", **settings)
    if vocabulary is not None:
        layer.set_vocabulary(vocabulary)
        return layer
    key = repr(sorted(settings.items()))
    if adapted is not None and key in adapted:
        tokens, idf_weights = adapted[key]
        layer.set_vocabulary(tokens, idf_weights=idf_weights)
        return layer
    if texts is None:
        raise ValueError("a text model needs the training texts to adapt its tokenizer")
    layer.adapt(tf.data.Dataset.from_tensor_slices(tf.constant(list(texts))).batch(512))
    if adapted is not None:
        state: dict[str, Any] = {}
        layer.save_own_variables(state)  # the IDF weights of a TF-IDF tokenizer
        adapted[key] = (layer.get_vocabulary(), state.get("idf_weights"))
    return layer


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
    family: str,
    params: BaseModel | dict[str, Any],
    prep: Preprocessing,
    train: TrainConfig,
    texts: Any = None,
    vocabulary: list[str] | None = None,
    adapted: Vocabularies | None = None,
) -> keras.Model:
    """A compiled model that takes raw inputs and answers in original terms: class
    probabilities for classification, values in the series' units for forecasts. A text
    model takes raw strings; `texts` (the training split's) adapt its tokenizer, or it is
    given the `vocabulary` of one that was adapted (or what `adapted` holds for its
    settings, learned from the same `texts`)."""
    import keras

    spec = family_spec(family)
    if prep.modality not in spec.modalities:
        raise ValueError(f"family {family!r} cannot take {prep.modality} data")
    hparams = params if isinstance(params, spec.params) else spec.params.model_validate(params)
    if prep.modality == "text":
        if not isinstance(hparams, TextVectorizerParams):
            raise ValueError(f"family {family!r} takes text but has no tokenizer settings")
        inputs = keras.Input(shape=(), name="raw_input", dtype="string")
        x, base = text_vectorizer(hparams, texts, vocabulary, adapted)(inputs), None
    else:
        inputs = keras.Input(shape=tuple(prep.input_shape), name="raw_input", dtype="float32")
        x, base = _PREPROCESSORS[prep.modality](inputs, prep)
    x = BODIES[family](x, hparams)
    head, loss, metrics = _HEADS[prep.task_type]
    model = keras.Model(inputs, head(x, base, prep), name=f"{family}_{prep.modality}")
    model.compile(
        optimizer=_optimizer(train),
        loss=loss,
        metrics=metrics,
        steps_per_execution=spec.steps_per_execution,
    )
    return model


def as_saved(
    fitted: keras.Model,
    family: str,
    params: FamilyParams,
    prep: Preprocessing,
    train: TrainConfig,
) -> keras.Model:
    """The model to save: `fitted` itself, or, where training read less of each input than
    the saved model reads (`params.for_training()`: a text transformer fitted on the first
    `train_windows` windows of each document), the same weights and vocabulary in a model
    that reads all `params.windows`. Every weight is shared by all windows, and a window of
    padding adds nothing, so a text that fits the training windows gets the same answer from
    both."""
    import keras

    if params.for_training() == params:
        return fitted
    vocabulary = None
    if prep.modality == "text":
        vocabulary = fitted.get_layer("tokenize").get_vocabulary()
    model = build_model(family, params, prep, train, vocabulary=vocabulary)
    for layer in model.layers:
        if layer.weights and not isinstance(layer, keras.layers.TextVectorization):
            layer.set_weights(fitted.get_layer(layer.name).get_weights())
    return model
