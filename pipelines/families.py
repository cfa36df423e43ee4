"""The family registry: each model family's name, the data it takes and the pydantic schema
of its hyperparameters.

`config` validates `models.<name>.family` and `.model` against this module, so it holds no
Keras and no builder code: the bodies live in `pipelines.model.builders`, keyed by the same
names (a test checks that both list the same families).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MODALITIES = ("tabular", "images", "sequence", "text")
Activation = Literal["relu", "gelu", "tanh", "elu", "selu", "swish"]
PositiveInts = Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=1)]


class FamilyParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def for_training(self) -> FamilyParams:
        """The params of the model that is fitted; the saved one has `self` (they differ only
        where training reads less of an input than the saved model does)."""
        return self


class DenseParams(FamilyParams):
    units: PositiveInts = [64, 32]
    activation: Activation = "relu"
    dropout: float = Field(0.2, ge=0, lt=1)
    l2: float = Field(0.0, ge=0)


class ConvParams(FamilyParams):
    filters: PositiveInts = [32, 64]
    kernel_size: int = Field(3, ge=1)
    dense_units: int = Field(64, ge=1)
    dropout: float = Field(0.3, ge=0, lt=1)
    augment: float = Field(
        0.1, ge=0, lt=0.5, description="Random shift, as a share of the image; training only."
    )


class RecurrentParams(FamilyParams):
    units: PositiveInts = [32]
    dropout: float = Field(0.0, ge=0, lt=1)


class TransformerParams(FamilyParams):
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


Standardize = Literal["lower_and_strip_punctuation", "lower", "strip_punctuation"]


class TextVectorizerParams(FamilyParams):
    """How raw strings become tokens inside the model (Keras `TextVectorization`, adapted on
    the training split and saved in the `.keras` file)."""

    max_tokens: int = Field(20000, ge=10, description="Vocabulary size, OOV token included.")
    standardize: Standardize = "lower_and_strip_punctuation"


class TextDenseParams(TextVectorizerParams, DenseParams):
    """Bag of words weighted by TF-IDF (n-grams up to `ngrams`), then dense layers."""

    ngrams: int = Field(2, ge=1, le=3)


class TextTransformerParams(TextVectorizerParams, TransformerParams):
    """Token and position embeddings, the encoder blocks, pooling. A document is read in
    `windows` consecutive windows of `sequence_length` tokens (attention within a window),
    pooled together over all their tokens. Training reads each document's first
    `train_windows` windows (the cost of an epoch grows with them); the saved model reads
    `windows`, with the same weights."""

    sequence_length: int = Field(256, ge=8, description="Tokens in one attention window.")
    windows: int = Field(
        1,
        ge=1,
        le=64,
        description="Windows the saved model reads per document: the first windows x "
        "sequence_length tokens count, the rest is cut.",
    )
    train_windows: int | None = Field(
        None,
        ge=1,
        description="Windows a training or validation document is read as (its first "
        "train_windows x sequence_length tokens); at most `windows`. Default: `windows`.",
    )

    @model_validator(mode="after")
    def _train_windows_fit(self) -> TextTransformerParams:
        if self.train_windows is not None and self.train_windows > self.windows:
            raise ValueError(
                f"train_windows ({self.train_windows}) must not exceed windows ({self.windows})"
            )
        return self

    def for_training(self) -> TextTransformerParams:
        """The same params reading `train_windows` windows: the model that is fitted."""
        if self.train_windows is None or self.train_windows == self.windows:
            return self
        return self.model_copy(update={"windows": self.train_windows})


@dataclass(frozen=True)
class FamilySpec:
    name: str
    modalities: tuple[str, ...]
    params: type[FamilyParams]
    # Batches per call into Keras' compiled step: the same steps in the same order either way.
    # 4 where it measured faster: an epoch of the text transformer 3.55 s against 3.86 s; the
    # sequence transformer's train stage was 2 s slower with 4 (bench/results.md, fifth pass).
    steps_per_execution: int = 1


FAMILIES: dict[str, FamilySpec] = {
    spec.name: spec
    for spec in (
        FamilySpec("dnn", ("tabular",), DenseParams),
        FamilySpec("cnn", ("images",), ConvParams),
        FamilySpec("lstm", ("sequence",), RecurrentParams),
        FamilySpec("transformer", ("sequence",), TransformerParams),
        FamilySpec("text-dnn", ("text",), TextDenseParams),
        FamilySpec("text-transformer", ("text",), TextTransformerParams, steps_per_execution=4),
    )
}


def family_spec(name: str) -> FamilySpec:
    if name not in FAMILIES:
        raise ValueError(f"unknown model family {name!r} (known: {', '.join(FAMILIES)})")
    return FAMILIES[name]
