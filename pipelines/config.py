"""`params.yaml`, parsed once into validated objects.

Every error names the offending key as a dotted path (``models.tabular.train.learning_rate``),
so a typo in the params file is found without reading a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator

from pipelines.dataset_config import (
    DatasetConfig,
    PathsConfig,
    ValidationConfig,
    task_type_of,
)
from pipelines.errors import ConfigError
from pipelines.families import FamilyParams, family_spec
from pipelines.metric_names import PRIMARY_METRICS, SEARCH_METRICS
from pipelines.model_config import ModelEntry, ModelRef
from pipelines.search_config import SEARCHABLE_SECTIONS, SearchConfig, searched_value
from pipelines.strict_model import StrictModel


class BaseConfig(StrictModel):
    seed: int = Field(42, ge=0)
    experiment: str = Field("mlops-pipelines", min_length=1)


class OrchestrationConfig(StrictModel):
    """The retraining flow (`pipelines retrain`) and its scheduled deployment."""

    schedule: str = Field("0 3 * * 1", description="Cron of the retraining deployment (UTC).")
    timezone: str = "UTC"
    work_pool: str = Field("pipelines", min_length=1)
    task_runner: Literal["sequential", "threads", "dask"] = "sequential"
    workers: int = Field(2, ge=1, description="Threads, or workers of the local Dask cluster.")
    retries: int = Field(2, ge=0, description="Retries of a stage that failed transiently.")
    retry_delay_seconds: list[int] = Field(default_factory=lambda: [10, 60])
    stage_timeout_s: int = Field(3600, ge=10)

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str) -> str:
        if len(value.split()) != 5:
            raise ValueError(f"expected a 5-field cron expression, got {value!r}")
        return value


class PipelineConfig(StrictModel):
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
