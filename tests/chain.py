"""The pipeline's own step functions chained in this process, as the stages run them: split ->
train -> evaluate -> register, each reading the folder the one before wrote. For tests that
need a trained, evaluated or registered model of their own in a temp folder, without DVC or
Prefect (the e2e project in `tests/projects.py` covers those)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipelines.config import PipelineConfig


def train_and_evaluate(
    cfg: PipelineConfig, name: str, data_dir: Path, model_dir: Path, eval_dir: Path
) -> None:
    """Train model `name` on the split in `data_dir` into `model_dir`, evaluate it into
    `eval_dir`."""
    from pipelines.model.evaluation import evaluate_saved_outputs
    from pipelines.model.scoring import OUTPUTS_FILE
    from pipelines.model.training import train_model

    train_model(cfg, cfg.model(name), data_dir, model_dir)
    evaluate_saved_outputs(name, model_dir / OUTPUTS_FILE, data_dir, eval_dir)


def split_train_evaluate_register(
    cfg: PipelineConfig, name: str, root: Path, raw: Path, docs_dir: Path, seed: int = 42
) -> Any:
    """The whole chain for model `name` from the raw file of its dataset, in `root` (`data`,
    `model`, `eval`, `registration.json`); the `Registration` register gave."""
    from pipelines.data.preprocessing import split_and_fit
    from pipelines.registry.registration import register_model

    model = cfg.model(name)
    split_and_fit(model.dataset, raw, cfg.dataset(model.dataset), seed, root / "data")
    train_and_evaluate(cfg, name, root / "data", root / "model", root / "eval")
    return register_model(
        cfg,
        model,
        model_dir=root / "model",
        eval_dir=root / "eval",
        data_dir=root / "data",
        raw_data=raw,
        docs_dir=docs_dir,
        out=root / "registration.json",
    )
