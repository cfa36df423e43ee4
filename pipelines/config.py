"""`params.yaml`, parsed once into validated objects.

Every error names the offending key as a dotted path (``models.tabular.train.learning_rate``),
so a typo in the params file is found without reading a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from pipelines.errors import ConfigError
from pipelines.families import FAMILIES, MODALITIES, FamilyParams, family_spec
from pipelines.metric_names import (
    DEFAULT_PRIMARY,
    METRIC_DIRECTIONS,
    PRIMARY_METRICS,
    SEARCH_METRICS,
)
from pipelines.search_config import SEARCHABLE_SECTIONS, SearchConfig, SearchRange, searched_value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class BaseConfig(_Strict):
    seed: int = Field(42, ge=0)
    experiment: str = Field("mlops-pipelines", min_length=1)


class PathsConfig(_Strict):
    """Folder layout; `dvc.yaml` templates its paths from this same section."""

    raw: str = "data/raw"
    processed: str = "data/processed"
    models: str = "models"
    reports: str = "reports"
    suites: str = "gx/expectations"


class SplitConfig(_Strict):
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


class SeriesConfig(_Strict):
    """How a univariate series becomes supervised windows."""

    time_column: str = Field("date", min_length=1)
    window: int = Field(52, ge=2, description="Past steps the model sees (N).")
    season: int = Field(52, ge=1, description="Steps per season, for the seasonal-naive baseline.")
    max_gap: int = Field(
        20, ge=0, description="Longest run of missing steps that is filled by interpolation."
    )


class ShardsConfig(_Strict):
    """A tabular dataset kept as Parquet shards and streamed by every stage, for data larger
    than memory (pipelines.data.streaming)."""

    rows: int = Field(
        1_000_000, ge=1000, description="Rows per shard; one shard is in memory at a time."
    )


class DatasetConfig(_Strict):
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


class DriftConfig(_Strict):
    """Limits on drift of new data from the champion's training reference (pipelines.data.drift)."""

    psi: float = Field(0.25, gt=0, description="Population stability index, per feature.")
    ks: float = Field(0.2, gt=0, le=1, description="Kolmogorov-Smirnov distance, per feature.")
    on_drift: Literal["fail", "warn"] = Field(
        "fail", description="Beyond a limit: fail validation, or warn and go on."
    )


class ValidationConfig(_Strict):
    drift: DriftConfig = DriftConfig()


_DISTRIBUTE = ("none", "mirrored")


class TrainConfig(_Strict):
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


class OrchestrationConfig(_Strict):
    """The retraining flow (`pipelines retrain`) and its scheduled deployment."""

    schedule: str = Field("0 3 * * 1", description="Cron of the retraining deployment (UTC).")
    timezone: str = "UTC"
    work_pool: str = Field("pipelines", min_length=1)
    task_runner: Literal["sequential", "threads", "dask"] = "sequential"
    workers: int = Field(2, ge=1, description="Threads, or workers of the local Dask cluster.")
    retries: int = Field(2, ge=0, description="Retries of a stage that failed transiently.")
    retry_delay_seconds: list[int] = [10, 60]
    stage_timeout_s: int = Field(3600, ge=10)

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str) -> str:
        if len(value.split()) != 5:
            raise ValueError(f"expected a 5-field cron expression, got {value!r}")
        return value


class GateConfig(_Strict):
    """Quality gate. Absolute floors/ceilings on test metrics; metrics that must beat the
    trivial baselines (always including the primary metric); and non-inferiority to the
    champion on the same test rows: the one-sided (1 - champion_alpha) upper bound of how much
    worse the challenger is on the primary metric must stay below champion_margin times the
    champion's value."""

    min: dict[str, float] = {}
    max: dict[str, float] = {}
    beat_baseline: list[str] = []
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


class ModelEntry(_Strict):
    """One trained and registered model, `models.<name>`. The key is the registered model's
    name (`sequence-lstm`); `problem` groups the models that solve the same problem
    (`sequence`); the family's hyperparameters are `model`."""

    problem: str = Field(min_length=1)
    dataset: str
    family: str
    model: dict[str, Any] = {}
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


class PipelineConfig(_Strict):
    base: BaseConfig = BaseConfig()
    paths: PathsConfig = PathsConfig()
    validation: ValidationConfig = ValidationConfig()
    orchestration: OrchestrationConfig = OrchestrationConfig()
    datasets: dict[str, DatasetConfig]
    models: dict[str, ModelEntry]
    search: dict[str, SearchConfig] = Field(
        {}, description="Per model (its key): a hyperparameter search before training."
    )

    def dataset(self, name: str) -> DatasetConfig:
        if name not in self.datasets:
            raise ConfigError(
                f"datasets.{name}: no such dataset (known: {', '.join(self.datasets)})"
            )
        return self.datasets[name]

    def models_of(self, dataset: str) -> list[str]:
        """Registered model names trained on `dataset`, in params order."""
        return [name for name, entry in self.models.items() if entry.dataset == dataset]

    def model(self, name: str) -> ModelRef:
        """Model `models.<name>` resolved: its name, entry and family params (`ModelRef`)."""
        if name not in self.models:
            raise ConfigError(f"models.{name}: no such model (known: {', '.join(self.models)})")
        return ModelRef(name, self.models[name])

    def entry(self, name: str) -> ModelEntry:
        """The entry `models.<name>`; its key is the registered model's name."""
        return self.model(name).entry

    def search_of(self, name: str) -> SearchConfig:
        if name not in self.search:
            raise ConfigError(f"search.{name}: model {name!r} has no search section")
        return self.search[name]

    def with_overrides(self, name: str, overrides: dict[str, Any]) -> PipelineConfig:
        """This config with `models.<name>` changed by `{"train.learning_rate": 0.002, ...}`
        (a search's best params), validated like the params file."""
        raw = self.model_dump()
        entry = raw["models"][name]
        for key, value in overrides.items():
            section, _, param = key.partition(".")
            if section not in SEARCHABLE_SECTIONS or not param:
                raise ConfigError(f"models.{name}: cannot override {key!r}")
            entry[section][param] = value
        return parse_config(raw, searches=False)

    def tuned(self, model: ModelRef, overrides: dict[str, Any]) -> ModelRef:
        """`model` changed by `overrides` (`with_overrides`: a search's best params, or one
        trial's point), validated like the params file; `model` itself without any."""
        if not overrides:
            return model
        return self.with_overrides(model.name, overrides).model(model.name)

    def model_params(self, name: str) -> FamilyParams:
        """The family hyperparameters of model `name`, validated against its family's schema."""
        return self.model(name).params


def task_type_of(modality: str) -> str:
    """`regression` for a series (a forecast), `classification` for the other modalities."""
    return "regression" if modality == "sequence" else "classification"


def _dotted(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc) or "<root>"


def _check_cross_references(cfg: PipelineConfig) -> None:
    for name, entry in cfg.models.items():
        if entry.dataset not in cfg.datasets:
            raise ConfigError(
                f"models.{name}.dataset: unknown dataset {entry.dataset!r} "
                f"(known: {', '.join(cfg.datasets)})"
            )
        spec = family_spec(entry.family)
        modality = cfg.datasets[entry.dataset].modality
        if modality not in spec.modalities:
            raise ConfigError(
                f"models.{name}.family: family {entry.family!r} takes {'/'.join(spec.modalities)} "
                f"data, but dataset {entry.dataset!r} is {modality}"
            )
        task_type = task_type_of(modality)
        primary = entry.gate.primary(task_type)
        if primary not in PRIMARY_METRICS[task_type]:
            raise ConfigError(
                f"models.{name}.gate.primary_metric: {primary!r} is not computed for a "
                f"{task_type} model (use one of: {', '.join(PRIMARY_METRICS[task_type])})"
            )
        try:
            spec.params.model_validate(entry.model)
        except ValidationError as err:
            first = err.errors()[0]
            raise ConfigError(
                f"models.{name}.model.{_dotted(first['loc'])}: {first['msg']}"
            ) from None


def searchable(cfg: PipelineConfig, name: str) -> dict[str, dict[str, Any]]:
    """Per section, the current settings of model `name` that a search may vary."""
    model = cfg.model(name)
    return {"model": model.params.model_dump(), "train": model.train.model_dump()}


def _check_search(cfg: PipelineConfig, name: str, search: SearchConfig) -> None:
    where = f"search.{name}"
    if name not in cfg.models:
        raise ConfigError(f"{where}: no such model (known: {', '.join(cfg.models)})")
    if search.dataset != cfg.models[name].dataset:
        raise ConfigError(
            f"{where}.dataset: {search.dataset!r}, but model {name!r} trains on "
            f"{cfg.models[name].dataset!r}; set it to {cfg.models[name].dataset}"
        )
    task_type = task_type_of(cfg.datasets[cfg.models[name].dataset].modality)
    known = SEARCH_METRICS[task_type]
    if search.metric not in known:
        raise ConfigError(
            f"{where}.metric: {search.metric!r} is not logged for a {task_type} model "
            f"(use one of: {', '.join(known)})"
        )
    if search.direction is not None and search.direction != known[search.metric]:
        raise ConfigError(
            f"{where}.direction: {search.metric} is optimized with direction "
            f"{known[search.metric]}, not {search.direction}"
        )
    current = searchable(cfg, name)
    for key, spec in search.space.items():
        section, _, param = key.partition(".")
        if section not in SEARCHABLE_SECTIONS or param not in current[section]:
            options = [f"{s}.{p}" for s in SEARCHABLE_SECTIONS for p in current[s]]
            raise ConfigError(
                f"{where}.space.{key}: unknown hyperparameter of model {name!r} "
                f"(family {cfg.models[name].family}; known: {', '.join(options)})"
            )
        for value in spec.values():
            try:
                cfg.with_overrides(name, {key: searched_value(current[section][param], value)})
            except ConfigError as err:
                why = str(err).strip().splitlines()[-1].strip()
                raise ConfigError(
                    f"{where}.space.{key}: {value!r} is not a valid setting ({why})"
                ) from None


# Keys that were renamed: the old name gets an error that names the new one.
_RENAMED = {"tasks": "models"}
_RENAMED_IN_ENTRY = {"task": "problem"}


def _check_renamed_keys(raw: dict[str, Any]) -> None:
    for old, new in _RENAMED.items():
        if old in raw:
            raise ConfigError(
                f"{old}: renamed to `{new}` (each entry's `task:` is now `problem:`); "
                f"rename the section in params.yaml"
            )
    for name, entry in (raw.get("models") or {}).items():
        for old, new in _RENAMED_IN_ENTRY.items():
            if isinstance(entry, dict) and old in entry:
                raise ConfigError(f"models.{name}.{old}: renamed to `{new}`")


def parse_config(raw: Any, searches: bool = True) -> PipelineConfig:
    """Validate an already-loaded params mapping (`searches`: and each search's space)."""
    if not isinstance(raw, dict):
        raise ConfigError("params: expected a mapping at the top level")
    _check_renamed_keys(raw)
    try:
        cfg = PipelineConfig.model_validate(raw)
    except ValidationError as err:
        lines = [f"  {_dotted(e['loc'])}: {e['msg']}" for e in err.errors()]
        raise ConfigError("invalid params:\n" + "\n".join(lines)) from None
    _check_cross_references(cfg)
    for name, search in cfg.search.items() if searches else ():
        _check_search(cfg, name, search)
    return cfg


def load_config(path: str | Path = "params.yaml") -> PipelineConfig:
    """Read and validate `params.yaml`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"params file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    return parse_config(raw)


__all__ = [
    "MODALITIES",
    "ConfigError",
    "DatasetConfig",
    "DriftConfig",
    "GateConfig",
    "ModelEntry",
    "ModelRef",
    "PipelineConfig",
    "SearchConfig",
    "SearchRange",
    "ShardsConfig",
    "TrainConfig",
    "load_config",
    "parse_config",
]
