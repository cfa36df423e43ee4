"""`search.<model>` in params.yaml: the schema of a hyperparameter search (its space of
ranges, trials, metric, pruner, workers). `config` checks each search against its model."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from pipelines.strict_model import StrictModel

SEARCHABLE_SECTIONS = ("model", "train")


class SearchRange(StrictModel):
    """One hyperparameter's range: `low`/`high` (ints give whole numbers; `log` samples on a
    log scale; `step` a grid), or `choices`. For a list-valued parameter (`model.units`), a
    sampled number n stands for [n]."""

    low: int | float | None = None
    high: int | float | None = None
    log: bool = False
    step: int | float | None = Field(None, gt=0)
    choices: list[int | float | str | bool] | None = None

    @model_validator(mode="after")
    def _range(self) -> SearchRange:
        if self.choices is not None:
            if self.low is not None or self.high is not None:
                raise ValueError("give either choices or low/high, not both")
            if not self.choices:
                raise ValueError("choices: empty; list at least one value")
            return self
        if self.low is None or self.high is None:
            raise ValueError("give low and high (a range) or choices (a list)")
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) is above high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(
                f"log: a log scale needs low > 0, but the range [{self.low}, {self.high}] "
                "touches zero"
            )
        if self.log and self.step is not None:
            raise ValueError("step: not with log (Optuna samples a log range without steps)")
        return self

    @property
    def bounds(self) -> tuple[int | float, int | float]:
        """(low, high) of a range; a list of choices has none."""
        if self.low is None or self.high is None:
            raise ValueError("a list of choices has no low and high")
        return self.low, self.high

    @property
    def integer(self) -> bool:
        """Whole numbers: both bounds (and the step, if any) are ints."""
        return all(isinstance(v, int) for v in (self.low, self.high, self.step) if v is not None)

    def values(self) -> list[Any]:
        """The values that bound the range (or all choices): each must be a valid setting."""
        return list(self.choices) if self.choices is not None else [self.low, self.high]


class SearchConfig(StrictModel):
    """A hyperparameter search for one model (`search.<model>`), run by the `tune` stage
    with Optuna before `train`, which then trains on the best params."""

    dataset: str = Field(
        min_length=1,
        description="The model's dataset, repeated: dvc.yaml's tune stage reads its splits "
        "through it (DVC cannot look it up from the model's entry).",
    )
    space: dict[str, SearchRange] = Field(
        min_length=1, description="`model.<param>` or `train.<param>` -> its range."
    )
    trials: int = Field(20, ge=1, description="Trials to run (fewer if timeout_s ends it).")
    timeout_s: float | None = Field(None, gt=0, description="Stop starting trials after this.")
    metric: str = Field("val_loss", description="A validation metric, logged every epoch.")
    direction: Literal["minimize", "maximize"] | None = Field(
        None, description="Default: the metric's own (minimize a loss, maximize accuracy)."
    )
    pruner: Literal["none", "median", "halving"] = Field(
        "median", description="Stop poor trials early on their per-epoch metric."
    )
    max_epochs: int | None = Field(
        None, ge=1, description="Epochs per trial (default: the model's train.max_epochs)."
    )
    seed: int | None = Field(None, ge=0, description="TPE sampler seed (default: base.seed).")
    workers: int = Field(
        1, ge=1, description="Trials at once, on a Dask cluster when above 1 (README: Search)."
    )
    start_from_params: bool = Field(
        True, description="Trial 0 is the model's params.yaml values, so the search starts there."
    )

    @field_validator("metric")
    @classmethod
    def _validation_metric(cls, value: str) -> str:
        if not value.startswith("val_"):
            kind = "a test metric" if value.startswith("test") else "not a validation metric"
            raise ValueError(
                f"{value!r} is {kind}; a search may only look at validation metrics (val_loss, "
                "val_accuracy, val_mae), never at the test split the gate judges on"
            )
        return value


def searched_value(current: Any, value: Any) -> Any:
    """A sampled value as the parameter takes it: n stands for [n] in a list-valued one."""
    return [value] if isinstance(current, list) and not isinstance(value, list) else value
