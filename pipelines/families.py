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

MODALITIES = ("tabular", "images", "sequence")
Activation = Literal["relu", "gelu", "tanh", "elu", "selu", "swish"]
PositiveInts = Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=1)]


class FamilyParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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


@dataclass(frozen=True)
class FamilySpec:
    name: str
    modalities: tuple[str, ...]
    params: type[FamilyParams]


FAMILIES: dict[str, FamilySpec] = {
    spec.name: spec
    for spec in (
        FamilySpec("dnn", ("tabular",), DenseParams),
        FamilySpec("cnn", ("images",), ConvParams),
        FamilySpec("lstm", ("sequence",), RecurrentParams),
        FamilySpec("transformer", ("sequence",), TransformerParams),
    )
}


def family_spec(name: str) -> FamilySpec:
    if name not in FAMILIES:
        raise ValueError(f"unknown model family {name!r} (known: {', '.join(FAMILIES)})")
    return FAMILIES[name]
