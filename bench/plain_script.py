"""The obvious alternative to the pipeline: one Python script that trains the same models with
the same params, seed and early stopping on the same split files, runs the same search where
params.yaml has one (same sampler, pruner and trials), and writes test metrics. No validation,
tracking, orchestration or registry. Compare with a full `dvc repro --force`.

It uses the pipeline's own model code (builders, the fit with its input pipeline, the search's
trial, evaluation), as a script written by hand would import them, so that both train exactly
the same models: text models adapt their tokenizer on the training texts and train on cut
texts as the pipeline does.

Usage, in a project after `make run` (reads data/processed/*):
    time .venv/bin/python bench/plain_script.py [--only NAME,...]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

start = time.perf_counter()


def searched(cfg, name: str, data) -> tuple[object, int]:
    """The config `name` trains with after its search (params.yaml's when it has none), and
    the trials run: an in-process Optuna study with the pipeline's sampler and pruner."""
    if name not in cfg.search:
        return cfg, 0
    import optuna

    from pipelines.model.search import create_study, current_values, overrides, run_trial

    search = cfg.search_of(name)
    study = create_study(cfg, name)
    if search.start_from_params:
        study.enqueue_trial(current_values(cfg, name))
    points = {}

    def objective(trial: optuna.Trial) -> float:
        result = run_trial(cfg, name, data, trial)
        points[trial.number] = result.point
        if result.state == "pruned":
            raise optuna.TrialPruned()
        if result.state == "failed":
            raise RuntimeError(result.error)
        return result.value

    study.optimize(objective, n_trials=search.trials, catch=(RuntimeError,))
    best = points[study.best_trial.number]
    return cfg.with_overrides(name, overrides(cfg, name, best)), search.trials


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default="", help="comma-separated model names (default: all)")
    only = [n for n in parser.parse_args().only.split(",") if n]

    import keras

    from pipelines.config import load_config
    from pipelines.model.evaluation import evaluate_model
    from pipelines.model.training import TrainingData, fit_model

    imported = time.perf_counter()
    cfg = load_config("params.yaml")
    for name, entry in cfg.models.items():
        if only and name not in only:
            continue
        t0 = time.perf_counter()
        data_dir = Path(cfg.paths.processed) / entry.dataset
        data = TrainingData.load(data_dir)
        tuned, trials = searched(cfg, name, data)
        model, curves = fit_model(tuned, tuned.model(name), data, verbose=0)
        out = Path("/tmp/plain-script") / name
        out.mkdir(parents=True, exist_ok=True)
        model.save(out / "model.keras")
        keras.backend.clear_session()
        metrics = evaluate_model(name, out / "model.keras", data_dir, out)
        print(
            f"{name}: {trials} search trials, {len(curves)} epochs, "
            f"{time.perf_counter() - t0:.1f} s, test {metrics['test']}"
        )
    print(f"imports {imported - start:.1f} s; total {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    from pipelines.console import show_messages

    show_messages()  # the library's progress lines, as the CLI shows them
    main()
