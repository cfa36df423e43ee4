"""`datasets.<name>`, `paths` and `validation` in params.yaml: the schema of the data side
(where a dataset comes from, how it is split, windowed or sharded, and the drift limits)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from pipelines.strict_model import StrictModel


class PathsConfig(StrictModel):
    """Folder layout; `dvc.yaml` templates its paths from this same section."""

    raw: str = "data/raw"
    processed: str = "data/processed"
    models: str = "models"
    reports: str = "reports"
    suites: str = "gx/expectations"


class SplitConfig(StrictModel):
    """Shares of the validation and test splits. Tables, images and text are split by a salted
    hash of each row (its features, or its `key`), so a row keeps its split as data grows; a
    series is split in time (the last `test` share is the test span)."""

    validation: float = Field(0.15, gt=0, lt=0.5)
    test: float = Field(0.2, gt=0, lt=0.5)
    salt: str | None = Field(
        None,
        min_length=1,
        description="Salt of the row hash; none: 'seed-<base.seed>'. A new salt reshuffles.",
    )
    key: str | None = Field(
        None,
        min_length=1,
        description="Column whose value alone decides a row's split (rows sharing it stay "
        "together); kept in the split files, not a feature. None: the features decide.",
    )
    tolerance: float = Field(
        0.05,
        gt=0,
        lt=0.5,
        description="Largest gap between a class's share in a split and the split's share; "
        "widened to 3 standard errors for a class too small to meet it by chance.",
    )


class SeriesConfig(StrictModel):
    """How a univariate series becomes supervised windows."""

    time_column: str = Field("date", min_length=1)
    window: int = Field(52, ge=2, description="Past steps the model sees (N).")
    season: int = Field(52, ge=1, description="Steps per season, for the seasonal-naive baseline.")
    max_gap: int = Field(
        20, ge=0, description="Longest run of missing steps that is filled by interpolation."
    )


class ShardsConfig(StrictModel):
    """A tabular dataset kept as Parquet shards and streamed by every stage, for data larger
    than memory (pipelines.data.streaming)."""

    rows: int = Field(
        1_000_000, ge=1000, description="Rows per shard; one shard is in memory at a time."
    )


class DatasetConfig(StrictModel):
    modality: Literal["tabular", "images", "sequence", "text"]
    source: str = Field(
        min_length=1,
        description="A built-in source ('sklearn:breast_cancer') or a file/folder path.",
    )
    label: str = Field(
        "target", min_length=1, description="Label column; for a series, the value column."
    )
    split: SplitConfig = SplitConfig()
    series: SeriesConfig | None = None
    shards: ShardsConfig | None = Field(
        None, description="Tabular only: keep the data as Parquet shards and stream it."
    )
    text_column: str | None = Field(
        None, min_length=1, description="Text only: the column of raw documents (default text)."
    )

    @model_validator(mode="after")
    def _series_settings(self) -> DatasetConfig:
        if self.shards is not None and self.modality != "tabular":
            raise ValueError(f"shards: only for tabular datasets, not {self.modality}")
        if self.modality == "sequence" and self.series is None:
            raise ValueError("series: required for a sequence dataset (time_column, window)")
        if self.modality != "sequence" and self.series is not None:
            raise ValueError(f"series: only for sequence datasets, not {self.modality}")
        if self.series and self.series.season > self.series.window:
            raise ValueError("series.season: must not exceed series.window")
        if self.text_column is not None and self.modality != "text":
            raise ValueError(f"text_column: only for text datasets, not {self.modality}")
        return self

    @property
    def text(self) -> str:
        """A text dataset's document column."""
        return self.text_column or "text"


class DriftConfig(StrictModel):
    """Limits on drift of new data from the champion's training reference (pipelines.data.drift)."""

    psi: float = Field(0.25, gt=0, description="Population stability index, per feature.")
    ks: float = Field(0.2, gt=0, le=1, description="Kolmogorov-Smirnov distance, per feature.")
    on_drift: Literal["fail", "warn"] = Field(
        "fail", description="Beyond a limit: fail validation, or warn and go on."
    )


class ValidationConfig(StrictModel):
    drift: DriftConfig = DriftConfig()


def task_type_of(modality: str) -> str:
    """`regression` for a series (a forecast), `classification` for the other modalities."""
    return "regression" if modality == "sequence" else "classification"
