"""`models.<name>` in params.yaml: the schema of one model (its family, hyperparameters,
training settings and quality gate), and `ModelRef`, the entry resolved once and handed down."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from pipelines.families import FAMILIES, FamilyParams, family_spec
from pipelines.metric_names import DEFAULT_PRIMARY, METRIC_DIRECTIONS, PRIMARY_METRICS
from pipelines.strict_model import StrictModel

_DISTRIBUTE = ("none", "mirrored")


class TrainConfig(StrictModel):
    optimizer: Literal["adam", "adamw", "sgd", "rmsprop"] = "adam"
    learning_rate: float = Field(1e-3, gt=0, le=10)
    batch_size: int = Field(32, ge=1)
    max_epochs: int = Field(200, ge=1)
    patience: int = Field(10, ge=0)
    short_texts: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Text models: the share of training documents cut short each epoch (the "
        "headline; the headline and first paragraph; the first 5-60 words), drawn anew every "
        "epoch from the seed. Training only; the saved model takes the raw text as it comes.",
    )
    distribute: str = Field(
        "none", description="tf.distribute strategy: none (one device), mirrored (GPUs of a node)."
    )

    @field_validator("distribute")
    @classmethod
    def _known_strategy(cls, value: str) -> str:
        if value in ("multi_worker_mirrored", "multiworkermirrored"):
            raise ValueError(
                "multi_worker_mirrored is broken with Keras 3 (keras-team/keras#20585); "
                "scale out across machines with orchestration.task_runner: dask instead"
            )
        if value not in _DISTRIBUTE:
            raise ValueError(f"unknown strategy {value!r} (known: {', '.join(_DISTRIBUTE)})")
        return value


class GateConfig(StrictModel):
    """Quality gate. Absolute floors/ceilings on test metrics; metrics that must beat the
    trivial baselines (always including the primary metric); and non-inferiority to the
    champion on the same test rows: the one-sided (1 - champion_alpha) upper bound of how much
    worse the challenger is on the primary metric must stay below champion_margin times the
    champion's value."""

    min: dict[str, float] = Field(default_factory=dict)
    max: dict[str, float] = Field(default_factory=dict)
    beat_baseline: list[str] = Field(default_factory=list)
    primary_metric: str | None = Field(
        None, description="Default: accuracy for classifiers, mae for forecasts."
    )
    champion_margin: float = Field(
        0.02,
        ge=0,
        lt=1,
        description="How much worse than the champion a challenger may be, as a share of the "
        "champion's primary metric.",
    )
    champion_alpha: float = Field(
        0.05, gt=0, lt=0.5, description="One-sided: the bound is the (1 - alpha) quantile."
    )
    bootstrap_resamples: int = Field(2000, ge=100)
    parity_tolerance: float = Field(1e-6, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _replaced(cls, data: Any) -> Any:
        if isinstance(data, dict) and "champion_tolerance" in data:
            raise ValueError(
                "champion_tolerance: replaced by champion_margin (a share of the champion's "
                "primary metric; see README: Registration)"
            )
        return data

    def primary(self, task_type: str) -> str:
        """The primary metric for a model of `task_type` (classification, regression)."""
        return self.primary_metric or DEFAULT_PRIMARY[task_type]

    @model_validator(mode="after")
    def _known_metrics(self) -> GateConfig:
        for section in ("min", "max", "beat_baseline"):
            for name in getattr(self, section):
                if name not in METRIC_DIRECTIONS:
                    known = ", ".join(sorted(METRIC_DIRECTIONS))
                    raise ValueError(f"{section}: unknown metric {name!r} (known: {known})")
        usable = [m for metrics in PRIMARY_METRICS.values() for m in metrics]
        if self.primary_metric is not None and self.primary_metric not in usable:
            raise ValueError(
                f"primary_metric: {self.primary_metric!r} is not a mean over rows, so it "
                f"cannot be compared row by row (use one of: {', '.join(usable)})"
            )
        return self


class ModelEntry(StrictModel):
    """One trained and registered model, `models.<name>`. The key is the registered model's
    name (`sequence-lstm`); `problem` groups the models that solve the same problem
    (`sequence`); the family's hyperparameters are `model`."""

    problem: str = Field(min_length=1)
    dataset: str
    family: str
    model: dict[str, Any] = Field(default_factory=dict)
    train: TrainConfig = TrainConfig()
    gate: GateConfig = GateConfig()

    @model_validator(mode="after")
    def _known_family(self) -> ModelEntry:
        if self.family not in FAMILIES:
            raise ValueError(
                f"family: unknown model family {self.family!r} (known: {', '.join(FAMILIES)})"
            )
        return self


@dataclass(frozen=True)
class ModelRef:
    """Model `models.<name>`, resolved once where a stage (or a command) starts and handed down
    the call chain instead of its name: the name (the registered model's), its entry and, from
    the entry, the family's validated hyperparameters. A search's best params make another
    `ModelRef` (`cfg.tuned(model, best_params)`), which holds the searched params."""

    name: str
    entry: ModelEntry

    @property
    def problem(self) -> str:
        return self.entry.problem

    @property
    def dataset(self) -> str:
        """The name of the dataset it trains on (`datasets.<dataset>`)."""
        return self.entry.dataset

    @property
    def family(self) -> str:
        return self.entry.family

    @cached_property
    def params(self) -> FamilyParams:
        """The family hyperparameters (`models.<name>.model`), validated against the family's
        schema."""
        return family_spec(self.entry.family).params.model_validate(self.entry.model)

    @property
    def train(self) -> TrainConfig:
        return self.entry.train

    @property
    def gate(self) -> GateConfig:
        return self.entry.gate
