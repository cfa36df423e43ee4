"""Register: log the run, register the version, and promote it behind the quality gate."""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.config import GateConfig, PipelineConfig
from pipelines.data.drift import REFERENCE_FILE
from pipelines.data.preprocessing import (
    SPEC_FILE,
    Preprocessing,
    encode_labels,
    load_split,
    split_shards_of,
)
from pipelines.data.streaming import take_rows
from pipelines.errors import GateRefused
from pipelines.model.evaluation import METRICS_FILE, PLOT_FILE, PREDICTIONS_FILE
from pipelines.model.training import HISTORY_FILE, MODEL_FILE, SUMMARY_FILE
from pipelines.registry import tracking
from pipelines.registry.gate import GateVerdict, apply_gate
from pipelines.registry.lineage import data_md5, dvc_lock_hashes, library_versions
from pipelines.registry.promotion import (
    GOLDEN_ROWS,
    Check,
    compare_with_champion,
    parity_check,
)
from pipelines.registry.runs import (
    REGISTERED_TAG,
    RUN_FILE,
    Experiment,
    run_name,
    run_tags,
    run_to_resume,
    search_params,
    search_tags,
    split_inputs,
    training_params,
    tuned,
)

LINEAGE_FILE = "lineage.json"


@dataclass(frozen=True)
class Registration:
    task: str
    model_name: str
    version: str | None
    run_id: str
    promoted: bool
    previous_champion: str | None
    checks: list[dict]
    gate_failures: list[str]
    candidate: bool = False  # registered under a DVC experiment: never promoted on its own
    experiment: str | None = None


_INPUTS = {
    "tabular": "raw feature rows, shape (n, features), columns in the order of `features`",
    "images": "raw pixel arrays, shape (n, height, width), values as in the source data",
    "sequence": "raw windows, shape (n, window, 1), oldest value first, in original units",
    "text": "raw strings, shape (n,): one document each, as written (the model standardizes)",
}
_OUTPUTS = {
    "classification": "class probabilities, shape (n, classes), in the order of `classes`",
    "regression": "the next value, shape (n, 1), in original units",
}


def model_metadata(name: str, problem: str, prep: Preprocessing) -> dict:
    """What a caller needs to use the model: it travels with every registered version."""
    return {
        "model_name": name,
        "problem": problem,
        "modality": prep.modality,
        "input": _INPUTS[prep.modality],
        "input_shape": prep.input_shape,
        "features": prep.features,
        "label": prep.label,
        "classes": prep.classes,
        "output": _OUTPUTS[prep.task_type],
    }


COMPARE_ROWS = 100_000  # test rows a sharded dataset's champion comparison uses


def comparison_rows(
    data_dir: Path, prep: Preprocessing, seed: int
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """The test rows the champion is compared on: (positions in the test split or None for
    all, raw inputs, targets). A sharded split gives a seeded sample of `COMPARE_ROWS`."""
    if not prep.sharded:
        return None, *load_split(data_dir, "test", prep)
    total = prep.rows["test"]
    rng = np.random.default_rng(seed)
    positions = np.sort(rng.choice(total, size=min(total, COMPARE_ROWS), replace=False))
    x, labels = take_rows(split_shards_of(data_dir, "test"), prep.features, prep.label, positions)
    return positions, x, encode_labels(labels, prep)


@dataclass(frozen=True)
class Evidence:
    """What a registration decides on, read from the train, evaluate and split outputs."""

    metrics: dict
    summary: dict
    history: pd.DataFrame
    prep: Preprocessing
    positions: np.ndarray | None  # the compared test rows (None: all of them)
    x_test: np.ndarray
    y_test: np.ndarray
    predictions: np.ndarray  # the new model's, on the compared rows


def collect_evidence(model_dir: Path, eval_dir: Path, data_dir: Path, seed: int) -> Evidence:
    metrics = json.loads((eval_dir / METRICS_FILE).read_text())
    summary = json.loads((model_dir / SUMMARY_FILE).read_text())
    history = pd.read_csv(model_dir / HISTORY_FILE)
    prep = Preprocessing.load(data_dir / SPEC_FILE)
    positions, x_test, y_test = comparison_rows(data_dir, prep, seed)
    if positions is None:
        predictions = np.load(eval_dir / PREDICTIONS_FILE)
    else:  # read only the sampled rows' predictions
        predictions = np.asarray(np.load(eval_dir / PREDICTIONS_FILE, mmap_mode="r")[positions])
    return Evidence(metrics, summary, history, prep, positions, x_test, y_test, predictions)


def run_record(cfg: PipelineConfig, name: str, raw_data: Path, ev: Evidence) -> tuple:
    """The MLflow run's (tags, params, metrics) for model `name`."""
    entry = cfg.entry(name)
    search = ev.summary.get("search")
    tags = {
        **run_tags(cfg, name, ev.prep.modality),
        **search_tags(search),
        "data_md5": data_md5(raw_data, entry.dataset),
    }
    params = {
        **training_params(cfg, name),
        **search_params(search),
        "gate": entry.gate.model_dump(),
    }
    metrics = {
        **{f"test_{k}": v for k, v in ev.metrics["test"].items()},
        **{
            f"baseline_{baseline}_{k}": v
            for baseline, values in ev.metrics["baselines"].items()
            for k, v in values.items()
        },
        **{
            f"reference_{name}_{k}": v
            for name, values in ev.metrics.get("references", {}).items()
            for k, v in values.items()
        },
        "best_epoch": ev.summary["best_epoch"],
        "stopped_epoch": ev.summary["stopped_epoch"],
    }
    return tags, params, metrics


def run_checks(
    gate: GateConfig,
    thresholds: GateVerdict,
    new_uri: str,
    new_scores: np.ndarray | str,
    champion_scores: np.ndarray | str | None,
    ev: Evidence,
    seed: int,
) -> tuple[list[Check], list[str]]:
    """Every check of the gate, from scores already computed: (checks, failure lines). Pure:
    it reads nothing and writes nothing."""
    if champion_scores is None:
        champion = Check("champion", True, "no champion yet")
    else:
        champion = compare_with_champion(
            champion_scores,
            ev.y_test,
            ev.predictions,
            gate.primary(ev.prep.task_type),
            gate.champion_margin,
            gate.champion_alpha,
            gate.bootstrap_resamples,
            seed,
        )
    parity = parity_check(new_uri, new_scores, ev.predictions[:GOLDEN_ROWS], gate.parity_tolerance)
    return combine_checks(thresholds, champion, parity)


def combine_checks(
    thresholds: GateVerdict, champion: Check, parity: Check
) -> tuple[list[Check], list[str]]:
    """The gate's checks in order, and one failure line each (the thresholds name each failed
    metric themselves)."""
    checks = [
        Check("thresholds", thresholds.passed, "; ".join(thresholds.checks)),
        champion,
        parity,
    ]
    failures = [
        *thresholds.failures,
        *(f"{c.name}: {c.detail}" for c in (champion, parity) if not c.passed),
    ]
    return checks, failures


def record_verdict(
    name: str,
    version: str,
    checks: list[Check],
    failures: list[str],
    passed: bool,
    compared_with: str | None,
    experiment: Experiment | None = None,
) -> tuple[bool, str | None]:
    """Tag the version with the gate's verdict and, if it passed, move `@champion` to it, only
    if `@champion` is still `compared_with` (compare-and-set); under a DVC experiment, tag it a
    candidate instead and move no alias. Returns (promoted, the previous champion)."""
    for check in checks:
        print(f"{'ok  ' if check.passed else 'FAIL'} {check.name}: {check.detail}")
    tracking.tag_version(
        name,
        version,
        {
            "gate": "passed" if passed else "failed",
            **{f"gate.{c.name}": ("ok: " if c.passed else "FAILED: ") + c.detail for c in checks},
            **({"gate.failures": " | ".join(failures)} if failures else {}),
            "gate.compared_with": compared_with or "none",
            **(experiment.tags() if experiment else {}),
        },
    )
    if experiment is not None or not passed:
        return False, None
    try:
        return True, tracking.promote(name, version, expected=compared_with)
    except tracking.ChampionMoved as moved:
        tracking.tag_version(name, version, {"gate.promotion": f"not promoted: {moved}"})
        return False, None


def write_lineage(
    cfg: PipelineConfig,
    name: str,
    run_id: str,
    result: Registration,
    tags: dict,
    params: dict,
    ev: Evidence,
) -> None:
    """`lineage.json` on the run: code, data, params, library versions and the verdict."""
    dataset = cfg.entry(name).dataset
    tracking.log_dict(
        run_id,
        {
            "model": {
                "name": name,
                "version": result.version,
                "promoted": result.promoted,
                "previous_champion": result.previous_champion,
            },
            "git": {key: tags[key] for key in ("git_commit", "git_dirty")},
            "data": {
                "md5": tags["data_md5"],
                "dvc_lock": dvc_lock_hashes(
                    tracking.project_root() / "dvc.lock", [f"ingest@{dataset}", f"split@{dataset}"]
                ),
            },
            "params": params,
            "seed": cfg.base.seed,
            "versions": library_versions(),
            "epochs": {"best": ev.summary["best_epoch"], "stopped": ev.summary["stopped_epoch"]},
            "search": ev.summary.get("search"),
            "test_metrics": ev.metrics,
            "gate": {"passed": result.promoted, "checks": result.checks},
        },
        LINEAGE_FILE,
    )


def register_task(
    cfg: PipelineConfig,
    task: str,
    *,
    model_dir: Path,
    eval_dir: Path,
    data_dir: Path,
    raw_data: Path,
    docs_dir: Path,
    out: Path,
) -> Registration:
    """Log the training run, register the model as a new version, and promote it to
    `@champion` only if it passes every check: absolute thresholds, the trivial baselines, not
    significantly worse than the current champion on the same test rows, and serving parity
    from a fresh process. A failed check is a normal outcome: the version stays registered for
    inspection, without the alias, tagged with what failed and by how much.

    The steps: collect the evidence, log the run and register the version, score in a fresh
    process, run the checks, record the verdict (tags, alias), write the lineage. It holds
    the model's registration lock throughout, so two registrations of one model never compare
    against a champion that the other is about to replace."""
    with tracking.model_lock(task):
        return _register(cfg, task, model_dir, eval_dir, data_dir, raw_data, docs_dir, out)


def _register(
    cfg: PipelineConfig,
    task: str,
    model_dir: Path,
    eval_dir: Path,
    data_dir: Path,
    raw_data: Path,
    docs_dir: Path,
    out: Path,
) -> Registration:
    name, gate = task, cfg.entry(task).gate  # one registered model per entry, named after it
    ev = collect_evidence(model_dir, eval_dir, data_dir, cfg.base.seed)
    cfg = tuned(cfg, name, ev.summary.get("search"))  # the params it was trained with
    for version in tracking.mark_incomplete_versions(name):
        print(f"{name} version {version} never got a gate verdict: tagged incomplete")
    champion_before = tracking.alias_version(name)
    primary = gate.primary(ev.prep.task_type)
    thresholds = apply_gate(gate, ev.metrics["test"], ev.metrics["baselines"], primary)
    experiment = Experiment.current()
    tags, params, run_metrics = run_record(cfg, name, raw_data, ev)
    resume, trained_in = run_to_resume(model_dir / RUN_FILE)
    if resume is None and trained_in is not None:
        # DVC reran register alone (gate params changed): a new run, linked to the training's.
        tags = {
            **tags,
            "training_run_id": trained_in,
            "mlflow.note.content": f"Registration rerun for the model trained in run "
            f"{trained_in} (only the gate's params changed); its curves are copied here.",
        }
    with tempfile.TemporaryDirectory() as tmp:
        golden = Path(tmp)
        np.save(golden / "inputs.npy", ev.x_test[:GOLDEN_ROWS])
        np.save(golden / "predictions.npy", ev.predictions[:GOLDEN_ROWS])
        with tracking.training_run(
            experiment=cfg.base.experiment,
            run_name=run_name(name, params, experiment),
            params=params,
            tags=tags,
            history=ev.history,
            metrics=run_metrics,
            artifacts={
                "evaluation": eval_dir / PLOT_FILE,
                "training": model_dir / HISTORY_FILE,
                "data_docs": docs_dir,
                "preprocessing": data_dir / SPEC_FILE,
                tracking.REFERENCE_DIR: data_dir / REFERENCE_FILE,
                tracking.GOLDEN_DIR: golden,
            },
            inputs=split_inputs(cfg.entry(task).dataset, data_dir),
            resume=resume,
        ) as run_id:
            version = tracking.register_version(
                run_id,
                model_path=model_dir / MODEL_FILE,
                name=name,
                tags={k: v for k, v in tags.items() if k != "mlflow.note.content"},
                metadata=model_metadata(name, cfg.entry(task).problem, ev.prep),
                model_artifacts={"reference": data_dir / REFERENCE_FILE},
            )
            tracking.set_run_tags(run_id, {REGISTERED_TAG: version})
            # One fresh process (as `mlflow models serve` loads a model) scores the new
            # version on the golden raw inputs and the current champion on the test rows.
            # The run stays open until the verdict is recorded: a RUNNING run's version is a
            # registration in flight, which `mark_incomplete_versions` leaves alone.
            new_uri = f"models:/{name}/{version}"
            jobs = [(new_uri, golden / "inputs.npy")]
            if champion_before is not None:
                np.save(golden / "test_inputs.npy", ev.x_test)
                jobs.append((f"models:/{name}/{champion_before}", golden / "test_inputs.npy"))
            scores = tracking.score_in_fresh_process(jobs)
            champion_scores = scores[1] if champion_before is not None else None
            checks, failures = run_checks(
                gate, thresholds, new_uri, scores[0], champion_scores, ev, cfg.base.seed
            )
            passed = all(c.passed for c in checks)
            promoted, previous = record_verdict(
                name, version, checks, failures, passed, champion_before, experiment
            )
    result = Registration(
        task=task,
        model_name=name,
        version=version,
        run_id=run_id,
        promoted=promoted,
        previous_champion=previous,
        checks=[asdict(c) for c in checks],
        gate_failures=failures,
        candidate=experiment is not None,
        experiment=experiment.name if experiment else None,
    )
    write_lineage(cfg, name, run_id, result, tags, params, ev)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(asdict(result), indent=2) + "\n")
    if experiment is not None:
        verdict = "passes" if passed else "fails"
        print(
            f"{name} version {version} registered as a candidate of experiment "
            f"{experiment.name} (it {verdict} the gate); @{tracking.CHAMPION} stays "
            f"{champion_before}. Promote it with: pipelines promote {name} {version}"
        )
    elif promoted:
        print(
            f"{name} version {version} is @{tracking.CHAMPION}"
            + (f"; version {previous} is @{tracking.PREVIOUS_CHAMPION}" if previous else "")
        )
    elif passed:
        print(
            f"{name} version {version} passed the gate but was NOT promoted: @{tracking.CHAMPION}"
            f" moved from {champion_before} during the comparison. Compare it with the new "
            f"champion: pipelines promote {name} {version}"
        )
    else:
        print(
            f"{name} version {version} registered but NOT promoted; @{tracking.CHAMPION} "
            f"stays {champion_before}. Failed: " + " | ".join(failures)
        )
    return result


def _metrics_of_run(values: dict[str, float]) -> tuple[dict, dict]:
    """(test metrics, baselines) back from a training run's logged metrics."""
    test = {k.removeprefix("test_"): v for k, v in values.items() if k.startswith("test_")}
    baselines: dict[str, dict[str, float]] = {}
    for key, value in values.items():
        # `baseline_<baseline>_<metric>`; both names may hold underscores (seasonal_naive,
        # log_loss), the metric names are known.
        metric = next((m for m in test if key.endswith(f"_{m}")), None)
        if key.startswith("baseline_") and metric:
            baseline = key.removeprefix("baseline_").removesuffix(f"_{metric}")
            baselines.setdefault(baseline, {})[metric] = value
    return test, baselines


def promote_version(cfg: PipelineConfig, name: str, version: str, data_dir: Path) -> str | None:
    """`pipelines promote`: rerun the gate for a registered version (a candidate of a DVC
    experiment, say) and move `@champion` to it only if it passes: the thresholds on its test
    metrics, non-inferiority to the current champion on the current test rows, and
    fresh-process parity on its golden sample. Raises `GateRefused` naming what failed.
    Returns the previous champion."""
    with tracking.model_lock(name):
        return _promote(cfg, name, version, data_dir)


def _promote(cfg: PipelineConfig, name: str, version: str, data_dir: Path) -> str | None:
    gate = cfg.entry(name).gate
    info = tracking.version_info(name, version)
    champion = tracking.alias_version(name)
    if champion == info.version:
        print(f"{name} version {info.version} is already @{tracking.CHAMPION}")
        return None
    prep = Preprocessing.load(data_dir / SPEC_FILE)
    primary = gate.primary(prep.task_type)
    test, baselines = _metrics_of_run(tracking.run_metrics(info.run_id))
    thresholds = apply_gate(gate, test, baselines, primary)
    uri = f"models:/{name}/{info.version}"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        golden = tracking.download_run_artifacts(info.run_id, tracking.GOLDEN_DIR, work)
        _, x_test, y_test = comparison_rows(data_dir, prep, cfg.base.seed)
        np.save(work / "test_inputs.npy", x_test)
        jobs = [(uri, golden / "inputs.npy"), (uri, work / "test_inputs.npy")]
        if champion is not None:
            jobs.append((f"models:/{name}/{champion}", work / "test_inputs.npy"))
        scores = tracking.score_in_fresh_process(jobs)
        parity = parity_check(
            uri, scores[0], np.load(golden / "predictions.npy"), gate.parity_tolerance
        )
    if champion is None:
        versus = Check("champion", True, "no champion yet")
    elif isinstance(scores[1], str):
        versus = Check("champion", False, f"{uri} cannot score the current test rows: {scores[1]}")
    else:
        versus = compare_with_champion(
            scores[2],
            y_test,
            scores[1],
            primary,
            gate.champion_margin,
            gate.champion_alpha,
            gate.bootstrap_resamples,
            cfg.base.seed,
        )
    checks, failures = combine_checks(thresholds, versus, parity)
    passed = all(c.passed for c in checks)
    for check in checks:
        print(f"{'ok  ' if check.passed else 'FAIL'} {check.name}: {check.detail}")
    tracking.tag_version(
        name,
        info.version,
        {
            "gate.promote": ("passed: " if passed else "refused: ")
            + (" | ".join(failures) or f"against champion {champion}"),
        },
    )
    if not passed:
        raise GateRefused(
            f"{name} version {info.version} not promoted; @{tracking.CHAMPION} stays "
            f"{champion}. Failed: " + " | ".join(failures)
        )
    try:
        previous = tracking.promote(name, info.version, expected=champion)
    except tracking.ChampionMoved as moved:
        raise GateRefused(f"{name} version {info.version} not promoted: {moved}") from moved
    print(
        f"{name} version {info.version} is @{tracking.CHAMPION}"
        + (f"; version {previous} is @{tracking.PREVIOUS_CHAMPION}" if previous else "")
    )
    return previous
