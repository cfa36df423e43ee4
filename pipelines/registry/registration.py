"""Register: log the run, register the version, and promote it behind the quality gate.

A model file is registered once: when the register stage meets a model file that is already a
version (by its MD5: DVC restored it, an experiment registered it, or params were reverted),
it judges that version instead of registering a copy. `registration.json` is written from the
registry (`registration_record`), so whatever path led to it, it says what the registry says.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.config import PipelineConfig
from pipelines.data.drift import REFERENCE_FILE
from pipelines.data.preprocessing import (
    SPEC_FILE,
    Preprocessing,
)
from pipelines.model.evaluation import PLOT_FILE
from pipelines.model.training import HISTORY_FILE, MODEL_FILE
from pipelines.model_config import ModelRef
from pipelines.registry.evidence import Evidence, collect_evidence, model_metadata
from pipelines.registry.lineage import data_md5, file_md5
from pipelines.registry.lineage_record import add_lineage_event, write_lineage
from pipelines.registry.promotion import (
    GOLDEN_INPUTS_FILE,
    GOLDEN_PREDICTIONS_FILE,
    GOLDEN_ROWS,
    SPLIT_TAG,
    Candidate,
    Rows,
    Verdict,
    judge,
)
from pipelines.registry.runs import (
    REGISTERED_TAG,
    RUN_FILE,
    Experiment,
    data_digest,
    run_name,
    run_tags,
    run_to_resume,
    search_params,
    search_tags,
    split_inputs,
    training_params,
    tuned,
)
from pipelines.registry.tracking import (
    aliases,
    fresh_process,
    model_versions,
    run_lifecycle,
    run_logging,
)
from pipelines.registry.verdicts import (
    MODEL_MD5_TAG,
    Registration,
    record_verdict,
    registration_record,
    write_registration,
)

log = logging.getLogger(__name__)


def run_record(
    cfg: PipelineConfig, model: ModelRef, raw_data: Path, ev: Evidence
) -> tuple[dict[str, str], dict[str, Any], dict[str, float]]:
    """The MLflow run's (tags, params, metrics) for `model`."""
    search = ev.summary.get("search")
    tags = {
        **run_tags(cfg, model, ev.prep.modality),
        **search_tags(search),
        "data_md5": data_md5(raw_data, model.dataset),
    }
    params = {
        **training_params(cfg, model),
        **search_params(search),
        "gate": model.gate.model_dump(),
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


def register_model(
    cfg: PipelineConfig,
    model: ModelRef,
    *,
    model_dir: Path,
    eval_dir: Path,
    data_dir: Path,
    raw_data: Path,
    docs_dir: Path,
    out: Path,
) -> Registration:
    """Log the training run, register the model as a new version, and promote it to
    `@champion` only if it passes every check (`promotion.judge`): absolute thresholds, the
    trivial baselines, not worse than the current champion on test rows neither trained on,
    and serving parity from a fresh process. A failed check is a normal outcome: the version
    stays registered for inspection, without the alias, tagged with what failed and by how
    much. Under a DVC experiment the version is a candidate and no alias moves.

    A model file that is already a version (same MD5) is not registered again: on the main
    line that version is judged against the champion (and promoted if it passes), under an
    experiment it is left as it is. Either way `out` gets the registry's account of the
    version (`registration_record`).

    It holds the model's registration lock throughout, so two registrations of one model
    never compare against a champion that the other is about to replace."""
    # The fresh process that scores the new version imports MLflow and Keras meanwhile.
    with aliases.model_lock(model.name), fresh_process.started_scorer() as scorer:
        return _register(cfg, model, model_dir, eval_dir, data_dir, raw_data, docs_dir, out, scorer)


def _register(
    cfg: PipelineConfig,
    model: ModelRef,
    model_dir: Path,
    eval_dir: Path,
    data_dir: Path,
    raw_data: Path,
    docs_dir: Path,
    out: Path,
    scorer: fresh_process.FreshScorer,
) -> Registration:
    ev = collect_evidence(model_dir, eval_dir, data_dir, cfg.base.seed)
    name = model.name
    model = tuned(cfg, model, ev.summary.get("search"))  # the params it was trained with
    for version in model_versions.mark_incomplete_versions(name):
        log.info(f"{name} version {version} never got a gate verdict: tagged incomplete")
    experiment = Experiment.current()
    md5 = file_md5(model_dir / MODEL_FILE)
    existing = _version_of_file(name, md5)
    if existing is None:
        version = _register_new(
            cfg,
            model,
            ev,
            md5,
            model_dir,
            eval_dir,
            data_dir,
            raw_data,
            docs_dir,
            experiment,
            scorer,
        )
    else:
        version = _judge_again(cfg, model, existing, ev, experiment, scorer)
    record = registration_record(name, version)
    write_registration(record, out)
    return record


def _version_of_file(name: str, md5: str) -> model_versions.VersionInfo | None:
    """The version of `name` registered from a model file with this MD5, if any. One whose
    registration never finished (tagged incomplete) does not count: the file is registered
    anew."""
    existing = model_versions.version_by_tag(name, MODEL_MD5_TAG, md5)
    if existing is None or existing.tags.get("gate", "").startswith("incomplete"):
        return None
    return existing


def _nothing_to_judge(
    name: str,
    existing: model_versions.VersionInfo,
    champion: str | None,
    experiment: Experiment | None,
) -> bool:
    """True (saying so) when a model file already registered as `existing` needs no verdict:
    it is the champion, or this is a DVC experiment, which moves no alias."""
    same = f"{name}: the model file is already registered as version {existing.version}"
    if champion == existing.version:
        log.info(f"{same}, which is @{aliases.CHAMPION}: nothing to register or promote")
        return True
    if experiment is not None:
        log.info(
            f"{same} (gate: {existing.tags.get('gate', 'none')}); an experiment moves no "
            f"alias: @{aliases.CHAMPION} stays {champion}"
        )
        return True
    return False


def account_of_known_file(name: str, model_file: Path, out: Path) -> Registration | None:
    """The register stage's quick path, before any flow starts: when `model_file` is already
    a version that needs no verdict (`_nothing_to_judge`), write its account to `out` and
    return it; otherwise None, and the stage runs in full. A gate setting changed, or an
    experiment's copy that reaches register before its first command has copied the records
    in (`orchestration.experiment_copy`), costs a look-up, not a registration."""
    existing = _version_of_file(name, file_md5(model_file))
    if existing is None:
        return None
    if not _nothing_to_judge(name, existing, aliases.alias_version(name), Experiment.current()):
        return None
    record = registration_record(name, existing.version)
    write_registration(record, out)
    return record


def _with_golden(ev: Evidence, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / GOLDEN_INPUTS_FILE, ev.x_test[:GOLDEN_ROWS])
    np.save(folder / GOLDEN_PREDICTIONS_FILE, ev.predictions[:GOLDEN_ROWS])
    return folder


def _candidate(name: str, version: str, ev: Evidence, golden: Path) -> Candidate:
    return Candidate(
        name=name,
        version=version,
        test_metrics=ev.metrics["test"],
        baselines=ev.metrics["baselines"],
        golden_inputs=golden / GOLDEN_INPUTS_FILE,
        golden_predictions=ev.predictions[:GOLDEN_ROWS],
        split=ev.prep.split,
        predictions=ev.predictions,
    )


def _register_new(
    cfg: PipelineConfig,
    model: ModelRef,
    ev: Evidence,
    md5: str,
    model_dir: Path,
    eval_dir: Path,
    data_dir: Path,
    raw_data: Path,
    docs_dir: Path,
    experiment: Experiment | None,
    scorer: fresh_process.FreshScorer,
) -> str:
    """Log the run, register the model file as a new version, judge it and record the
    verdict; returns the version."""
    name = model.name
    champion_before = aliases.alias_version(name)
    tags, params, run_metrics = run_record(cfg, model, raw_data, ev)
    resume, trained_in = run_to_resume(model_dir / RUN_FILE)
    if resume is None and trained_in is not None:
        # DVC reran register alone on a model no version has: a new run, linked to the
        # training's.
        tags = {
            **tags,
            "training_run_id": trained_in,
            "mlflow.note.content": f"Registration rerun for the model trained in run "
            f"{trained_in}; its curves are copied here.",
        }
    with tempfile.TemporaryDirectory() as tmp:
        golden = _with_golden(ev, Path(tmp) / "golden")
        with run_lifecycle.training_run(
            experiment=cfg.base.experiment,
            run_name=run_name(
                name, params, experiment, data_digest(Preprocessing.load(data_dir / SPEC_FILE))
            ),
            params=params,
            tags=tags,
            history=ev.history,
            metrics=run_metrics,
            artifacts={
                "evaluation": eval_dir / PLOT_FILE,
                "training": model_dir / HISTORY_FILE,
                "data_docs": docs_dir,
                "preprocessing": data_dir / SPEC_FILE,
                run_logging.REFERENCE_DIR: data_dir / REFERENCE_FILE,
                run_logging.GOLDEN_DIR: golden,
            },
            inputs=split_inputs(model.dataset, data_dir),
            resume=resume,
        ) as run_id:
            version = model_versions.register_version(
                run_id,
                model_path=model_dir / MODEL_FILE,
                name=name,
                tags={
                    **{k: v for k, v in tags.items() if k != "mlflow.note.content"},
                    MODEL_MD5_TAG: md5,
                    SPLIT_TAG: json.dumps(ev.prep.split, sort_keys=True),
                    **(experiment.tags() if experiment else {}),
                },
                metadata=model_metadata(name, model.problem, ev.prep),
                model_artifacts={"reference": data_dir / REFERENCE_FILE},
            )
            run_logging.set_run_tags(run_id, {REGISTERED_TAG: version})
            # The run stays open until the verdict is recorded: a RUNNING run's version is a
            # registration in flight, which `mark_incomplete_versions` leaves alone.
            verdict = judge(
                model.gate,
                _candidate(name, version, ev, golden),
                champion_before,
                Rows(ev.table, ev.prep),
                cfg.base.seed,
                scorer=scorer,
            )
            record_verdict(name, version, verdict, champion_before, experiment is None)
    record = registration_record(name, version)
    write_lineage(cfg, model, run_id, record, verdict.passed, tags, params, ev)
    _say(record, champion_before, verdict, experiment)
    return version


def _judge_again(
    cfg: PipelineConfig,
    model: ModelRef,
    existing: model_versions.VersionInfo,
    ev: Evidence,
    experiment: Experiment | None,
    scorer: fresh_process.FreshScorer,
) -> str:
    """The model file is already version `existing`: judge it on the main line unless it is
    the champion already; under an experiment, leave it as it is."""
    name = model.name
    version = existing.version
    champion_before = aliases.alias_version(name)
    if _nothing_to_judge(name, existing, champion_before, experiment):
        return version
    log.info(
        f"{name}: the model file is already registered as version {version}; judging it "
        f"against @{aliases.CHAMPION} ({champion_before or 'none'})"
    )
    with tempfile.TemporaryDirectory() as tmp:
        golden = _with_golden(ev, Path(tmp))
        verdict = judge(
            model.gate,
            _candidate(name, version, ev, golden),
            champion_before,
            Rows(ev.table, ev.prep),
            cfg.base.seed,
            scorer=scorer,
        )
    record_verdict(name, version, verdict, champion_before, True)
    record = registration_record(name, version)
    add_lineage_event(
        existing.run_id,
        {
            "event": "judged again on the main line (the model file was registered before)",
            "gate": {"passed": verdict.passed, "promoted": record.promoted},
            "compared_with": champion_before,
            "checks": record.checks,
        },
    )
    _say(record, champion_before, verdict, None)
    return version


def _say(
    record: Registration,
    champion_before: str | None,
    verdict: Verdict,
    experiment: Experiment | None,
) -> None:
    name, version = record.model_name, record.version
    if experiment is not None:
        log.info(
            f"{name} version {version} registered as a candidate of experiment "
            f"{experiment.name} (it {'passes' if verdict.passed else 'fails'} the gate); "
            f"@{aliases.CHAMPION} stays {champion_before}. Promote it with: "
            f"pipelines promote {name} {version}"
        )
    elif record.promoted:
        log.info(
            f"{name} version {version} is @{aliases.CHAMPION}"
            + (
                f"; version {champion_before} is @{aliases.PREVIOUS_CHAMPION}"
                if champion_before
                else ""
            )
        )
    elif verdict.passed:
        log.info(
            f"{name} version {version} passed the gate but was NOT promoted: @{aliases.CHAMPION}"
            f" moved from {champion_before} during the comparison. Compare it with the new "
            f"champion: pipelines promote {name} {version}"
        )
    else:
        log.info(
            f"{name} version {version} registered but NOT promoted; @{aliases.CHAMPION} "
            f"stays {champion_before}. Failed: " + " | ".join(verdict.failures)
        )
