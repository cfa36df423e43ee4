"""The pipeline's stages as plain functions of the CLI's arguments (strings and paths).

Each function is its stage's interface, written once: the CLI command (`pipelines.cli`) and
the Prefect flow (`pipelines.orchestration.flows`) are built from its signature, and a parameter's
`Annotated` text is its help. The first parameter is what the stage loops over (a dataset or
a model's name), a positional argument on the command line; the others are options.

Each stage parses the params file once and calls the step functions that do the work. `step`
decides how a step runs: directly (the default, and what `PIPELINES_PREFECT=off` uses, without
importing Prefect) or as a Prefect task (`pipelines.orchestration.flows` passes its tasks in).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pipelines.config import PipelineConfig, load_config

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from pipelines.data.validation import ValidationReport

Step = Callable[[Callable[..., Any]], Callable[..., Any]]


def direct(fn: Callable[..., Any]) -> Callable[..., Any]:
    return fn


MODEL_NAME = "The model's name: a key of `models:` in params."


def ingest(
    dataset: str,
    out: Annotated[str, "Parquet file to write."],
    params: str = "params.yaml",
    step: Step = direct,
) -> str:
    """Materialize DATASET (built-in source or CSV/Parquet path from params) as Parquet."""
    from pipelines.data.datasets import ingest as write

    cfg = load_config(params)
    return str(step(write)(dataset, cfg.dataset(dataset), Path(out)))


def validate_dataset(
    cfg: PipelineConfig,
    name: str,
    data_path: Path,
    suite_path: Path,
    report_dir: Path,
    step: Step = direct,
) -> ValidationReport:
    """The validate stage: the suite, the series policy and drift against the training
    reference of the dataset's champion, recorded as an MLflow run; raises `ValidationFailed`
    naming every failure (Data Docs are written either way)."""
    from pipelines.data.validation import check_dataset
    from pipelines.errors import StoreUnavailable, ValidationFailed
    from pipelines.registry.tracking import connection, drift_reference, run_lifecycle

    store_error = None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            reference = drift_reference.champion_reference(cfg.models_of(name), Path(tmp))
    except StoreUnavailable as err:
        if cfg.validation.drift.on_drift == "fail":
            raise ValidationFailed(
                f"{data_path}: drift cannot be checked, so the data is not passed: {err} "
                "(with validation.drift.on_drift: warn, it passes with a warning)"
            ) from err
        store_error, reference = err, None
        log.warning(f"drift not checked: {err}")
    report: ValidationReport = step(check_dataset)(
        cfg, name, data_path, suite_path, report_dir, reference
    )
    if store_error is not None:
        log.warning(f"the validation of {data_path} is not recorded in MLflow: {store_error}")
        if not report.success:
            raise report.error(data_path, suite_path)
        return report
    failures = " | ".join(map(str, report.failures))[:5000]
    run_lifecycle.log_validation_run(
        experiment=connection.data_experiment(cfg.base.experiment),
        run_name=f"validate-{name}",
        tags={
            "stage": "validate",
            "dataset": name,
            "data_path": str(data_path),
            "outcome": "passed" if report.success else "failed",
            **({"failures": failures} if failures else {}),
        },
        metrics={
            "rows": float(report.rows),
            "checks_evaluated": float(report.evaluated),
            "checks_failed": float(len(report.failures)),
            **report.metrics,
        },
        docs_dir=report_dir,
        success=report.success,
    )
    if not report.success:
        raise report.error(data_path, suite_path)
    log.info(f"validated {data_path}: {report.evaluated} checks passed; Data Docs: {report.docs}")
    return report


def validate(
    dataset: str,
    data: str,
    suite: str,
    report_dir: Annotated[str, "Where the Data Docs go."],
    params: str = "params.yaml",
    step: Step = direct,
) -> dict[str, Any]:
    """Check DATA against its Great Expectations suite, the series policy and drift from the
    champion's training data; exit 1 naming each failure."""
    cfg = load_config(params)
    report = validate_dataset(cfg, dataset, Path(data), Path(suite), Path(report_dir), step)
    return asdict(report)


def split(
    dataset: str, data: str, out_dir: str, params: str = "params.yaml", step: Step = direct
) -> dict[str, Any]:
    """Split by a salted hash of each row (series: by time); fit the preprocessing statistics
    on the training split only."""
    from pipelines.data.preprocessing import split_and_fit

    cfg = load_config(params)
    prep = step(split_and_fit)(
        dataset, Path(data), cfg.dataset(dataset), cfg.base.seed, Path(out_dir)
    )
    return asdict(prep)


def tune(
    model_name: Annotated[str, "A model with a `search:` section in params."],
    data_dir: str,
    out_dir: Annotated[str, "Where search.json and trials.csv go."],
    params: str = "params.yaml",
    step: Step = direct,
) -> dict[str, Any]:
    """Search model NAME's hyperparameters with Optuna: every trial in one process (or on Dask
    workers), a parent MLflow run with a nested run per trial, the best params for train."""
    from pipelines.orchestration.tuning import tune as search

    cfg = load_config(params)
    cfg.search_of(model_name)  # a model without a search section fails here, naming it
    model = cfg.model(model_name)
    result: dict[str, Any] = step(search)(cfg, model, Path(data_dir), Path(out_dir))
    return result


def train(
    model_name: Annotated[str, MODEL_NAME],
    data_dir: str,
    out_dir: str,
    search_dir: Annotated[
        str | None, "tune's output folder: a searched model trains on its best params."
    ] = None,
    params: str = "params.yaml",
    step: Step = direct,
) -> dict[str, Any]:
    """Train model NAME with early stopping; save it with its preprocessing inside. A model
    with a `search:` section trains on its search's best params (SEARCH_DIR/search.json)."""
    from pipelines.model.training import train_model
    from pipelines.registry.runs import live_training_run, load_search, search_record, tuned

    cfg = load_config(params)
    model = cfg.model(model_name)  # an unknown name fails here, naming the known ones
    search = load_search(cfg, model.name, Path(search_dir) if search_dir else None)
    if search:
        log.info(
            f"training on the best params of search run {search['parent_run_name']}: "
            f"{search['best_params']}"
        )
    model = tuned(cfg, model, search)  # a search's best params travel on
    record = search_record(search) if search else None
    with live_training_run(cfg, model, Path(data_dir), Path(out_dir), search) as epoch_logger:
        summary = step(train_model)(
            cfg, model, Path(data_dir), Path(out_dir), callbacks=[epoch_logger], search=record
        )
    return asdict(summary)


def evaluate(
    model_name: Annotated[str, MODEL_NAME],
    outputs: Annotated[str, "train's test_outputs.npz: the model's outputs on the test split."],
    data_dir: str,
    out_dir: str,
    run: Annotated[str | None, "train's run.json: the MLflow run to add to."] = None,
    params: str = "params.yaml",
    step: Step = direct,
) -> dict[str, Any]:
    """Test metrics beside the baselines (majority class; persistence and seasonal-naive for a
    forecast), the test predictions, and a confusion matrix or a forecast plot, from the
    outputs train scored (no TensorFlow here)."""
    from pipelines.model.evaluation import PLOT_FILE, evaluate_saved_outputs
    from pipelines.registry.runs import add_evaluation

    metrics: dict[str, Any] = step(evaluate_saved_outputs)(
        model_name, Path(outputs), Path(data_dir), Path(out_dir)
    )
    if run is not None:
        test = {f"test_{k}": float(v) for k, v in metrics["test"].items()}
        experiment = load_config(params).base.experiment
        add_evaluation(experiment, Path(run), test, Path(out_dir) / PLOT_FILE)
    return metrics


def register(
    model_name: Annotated[str, MODEL_NAME],
    model_dir: str,
    eval_dir: str,
    data_dir: str,
    raw_data: str,
    docs_dir: str,
    out: str,
    params: str = "params.yaml",
    step: Step = direct,
) -> dict[str, Any]:
    """Log the run, register a new version, promote it to `@champion` if every check passes."""
    from pipelines.registry.registration import register_model

    cfg = load_config(params)
    result = step(register_model)(
        cfg,
        cfg.model(model_name),
        model_dir=Path(model_dir),
        eval_dir=Path(eval_dir),
        data_dir=Path(data_dir),
        raw_data=Path(raw_data),
        docs_dir=Path(docs_dir),
        out=Path(out),
    )
    return asdict(result)
