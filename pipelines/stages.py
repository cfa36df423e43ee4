"""The pipeline's stages as plain functions of the CLI's arguments (strings and paths).

Each stage parses the params file once and calls the step functions that do the work. `step`
decides how a step runs: directly (the default, and what `PIPELINES_PREFECT=off` uses, without
importing Prefect) or as a Prefect task (`pipelines.flows` passes its tasks in).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pipelines.config import load_config

Step = Callable[[Callable[..., Any]], Callable[..., Any]]


def direct(fn: Callable[..., Any]) -> Callable[..., Any]:
    return fn


def ingest(dataset: str, out: str, params: str = "params.yaml", step: Step = direct) -> str:
    from pipelines.datasets import ingest as write

    cfg = load_config(params)
    return str(step(write)(dataset, cfg.dataset(dataset), Path(out)))


def validate(
    dataset: str,
    data: str,
    suite: str,
    report_dir: str,
    params: str = "params.yaml",
    step: Step = direct,
) -> dict:
    from pipelines.validation import validate_dataset

    cfg = load_config(params)
    report = step(validate_dataset)(cfg, dataset, Path(data), Path(suite), Path(report_dir))
    return asdict(report)


def split(
    dataset: str, data: str, out_dir: str, params: str = "params.yaml", step: Step = direct
) -> dict:
    from pipelines.preprocessing import split_and_fit

    cfg = load_config(params)
    prep = step(split_and_fit)(
        dataset, Path(data), cfg.dataset(dataset), cfg.base.seed, Path(out_dir)
    )
    return asdict(prep)


def train(
    task_name: str, data_dir: str, out_dir: str, params: str = "params.yaml", step: Step = direct
) -> dict:
    from pipelines.training import train_task

    cfg = load_config(params)
    return asdict(step(train_task)(cfg, task_name, Path(data_dir), Path(out_dir)))


def evaluate(task_name: str, model: str, data_dir: str, out_dir: str, step: Step = direct) -> dict:
    from pipelines.evaluation import evaluate_task

    return step(evaluate_task)(task_name, Path(model), Path(data_dir), Path(out_dir))


def register(
    task_name: str,
    model_dir: str,
    eval_dir: str,
    data_dir: str,
    raw_data: str,
    docs_dir: str,
    out: str,
    params: str = "params.yaml",
    step: Step = direct,
) -> dict:
    from pipelines.registration import register_task

    cfg = load_config(params)
    result = step(register_task)(
        cfg,
        task_name,
        model_dir=Path(model_dir),
        eval_dir=Path(eval_dir),
        data_dir=Path(data_dir),
        raw_data=Path(raw_data),
        docs_dir=Path(docs_dir),
        out=Path(out),
    )
    return asdict(result)
