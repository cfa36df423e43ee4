"""Register: log the run, register the version, and promote it behind the quality gate.

A model file is registered once: when the register stage meets a model file that is already a
version (by its MD5: DVC restored it, an experiment registered it, or params were reverted),
it judges that version instead of registering a copy. `registration.json` is written from the
registry (`registration_record`), so whatever path led to it, it says what the registry says.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.config import PipelineConfig
from pipelines.data.drift import REFERENCE_FILE
from pipelines.data.preprocessing import (
    SPEC_FILE,
    Preprocessing,
    encode_labels,
    raw_inputs,
    split_shards_of,
)
from pipelines.data.streaming import take_rows
from pipelines.errors import GateRefused
from pipelines.model.evaluation import METRICS_FILE, PLOT_FILE, PREDICTIONS_FILE
from pipelines.model.training import HISTORY_FILE, MODEL_FILE, TRAINING_FILE
from pipelines.registry.lineage import data_md5, dvc_lock_hashes, file_md5, library_versions
from pipelines.registry.promotion import (
    GOLDEN_ROWS,
    SPLIT_TAG,
    WITHOUT_COMPARISON,
    Candidate,
    Rows,
    Verdict,
    judge,
    split_mismatch,
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
from pipelines.registry.tracking import aliases, model_versions, run_lifecycle, run_logging

LINEAGE_FILE = "lineage.json"


REGISTRATION_FILE = "registration.json"
MODEL_MD5_TAG = "model_md5"  # a version's tag: the MD5 of its model file, as dvc.lock has it
CHECKS = ("thresholds", "champion", "parity")


@dataclass(frozen=True)
class Registration:
    """What the registry says of one version of a model: `registration.json`. Every field
    comes from the registry (tags and aliases), so the file says the same thing whichever
    path wrote it, and agrees with the registry when it is written."""

    model_name: str
    version: str
    run_id: str
    model_md5: str | None
    gate: str | None  # the last verdict: passed, failed, or incomplete (never judged)
    promoted: bool  # this version is @champion
    champion: str | None
    previous_champion: str | None
    checks: list[dict]
    gate_failures: list[str]
    compared_with: str | None  # the champion the last verdict compared it with
    not_promoted_because: str | None  # a passing version that is not champion: why
    candidate: bool  # registered under a DVC experiment
    experiment: str | None


def registration_record(name: str, version: str) -> Registration:
    """The registry's account of version `version` of `name`, as `registration.json` has it."""
    info = model_versions.version_info(name, version)
    tags = info.tags
    champion = aliases.alias_version(name)
    checks = []
    for check in CHECKS:
        text = tags.get(f"gate.{check}")
        if text is not None:
            passed, _, detail = text.partition(": ")
            checks.append({"name": check, "passed": passed == "ok", "detail": detail})
    failures = tags.get("gate.failures")
    return Registration(
        model_name=name,
        version=info.version,
        run_id=info.run_id,
        model_md5=tags.get(MODEL_MD5_TAG),
        gate=tags.get("gate"),
        promoted=champion == info.version,
        champion=champion,
        previous_champion=aliases.alias_version(name, aliases.PREVIOUS_CHAMPION),
        checks=checks,
        gate_failures=failures.split(" | ") if failures else [],
        compared_with=tags.get("gate.compared_with"),
        not_promoted_because=(tags.get("gate.promotion") or None)
        if champion != info.version
        else None,
        candidate=tags.get("candidate") == "true",
        experiment=tags.get("dvc_exp_name"),
    )


def write_registration(record: Registration, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(asdict(record), indent=2) + "\n")


def refresh_registration_file(cfg: PipelineConfig, name: str) -> None:
    """After an alias moved outside DVC (`pipelines promote`, `pipelines rollback`), rewrite
    the workspace's `registration.json` of `name` from the registry, so it stays true. DVC
    then sees the file changed and runs register again on the next `dvc repro`, which writes
    the same account."""
    path = Path(cfg.paths.models) / name / REGISTRATION_FILE
    if not path.is_file():
        return
    try:
        version = json.loads(path.read_text())["version"]
    except (ValueError, KeyError):
        return
    write_registration(registration_record(name, str(version)), path)


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
) -> tuple[np.ndarray | None, pd.DataFrame]:
    """The test rows the champion is compared on: (positions in the test split or None for
    all, the rows as a table of raw feature columns and the label, with the key or time
    column where the split has one). A sharded split gives a seeded sample of `COMPARE_ROWS`."""
    if not prep.sharded:
        return None, pd.read_parquet(Path(data_dir) / "test.parquet")
    total = prep.rows["test"]
    rng = np.random.default_rng(seed)
    positions = np.sort(rng.choice(total, size=min(total, COMPARE_ROWS), replace=False))
    x, labels = take_rows(split_shards_of(data_dir, "test"), prep.features, prep.label, positions)
    table = pd.DataFrame(x, columns=prep.features)
    table[prep.label] = labels
    return positions, table


@dataclass(frozen=True)
class Evidence:
    """What a registration decides on, read from the train, evaluate and split outputs."""

    metrics: dict
    summary: dict
    history: pd.DataFrame
    prep: Preprocessing
    positions: np.ndarray | None  # the compared test rows (None: all of them)
    table: pd.DataFrame  # those rows
    x_test: np.ndarray
    y_test: np.ndarray
    predictions: np.ndarray  # the new model's, on the compared rows


def collect_evidence(model_dir: Path, eval_dir: Path, data_dir: Path, seed: int) -> Evidence:
    metrics = json.loads((eval_dir / METRICS_FILE).read_text())
    summary = json.loads((model_dir / TRAINING_FILE).read_text())
    history = pd.read_csv(model_dir / HISTORY_FILE)
    prep = Preprocessing.load(data_dir / SPEC_FILE)
    positions, table = comparison_rows(data_dir, prep, seed)
    x_test = raw_inputs(table, prep.features, prep.input_shape)
    y_test = encode_labels(table[prep.label].to_numpy(), prep)
    if positions is None:
        predictions = np.load(eval_dir / PREDICTIONS_FILE)
    else:  # read only the sampled rows' predictions
        predictions = np.asarray(np.load(eval_dir / PREDICTIONS_FILE, mmap_mode="r")[positions])
    return Evidence(metrics, summary, history, prep, positions, table, x_test, y_test, predictions)


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


def record_verdict(
    name: str,
    version: str,
    verdict: Verdict,
    compared_with: str | None,
    promote: bool,
    extra_tags: dict | None = None,
) -> bool:
    """Tag the version with the gate's verdict and, if it passed and `promote`, move
    `@champion` to it, only if `@champion` is still `compared_with` (compare-and-set).
    Returns whether it was promoted."""
    for check in verdict.checks:
        print(f"{'ok  ' if check.passed else 'FAIL'} {check.name}: {check.detail}")
    model_versions.tag_version(
        name,
        version,
        {
            "gate": "passed" if verdict.passed else "failed",
            **{
                f"gate.{c.name}": ("ok: " if c.passed else "FAILED: ") + c.detail
                for c in verdict.checks
            },
            "gate.failures": " | ".join(verdict.failures),
            "gate.compared_with": compared_with or "none",
            "gate.promotion": "" if verdict.passed and promote else _held(verdict),
            **(extra_tags or {}),
        },
    )
    if not (promote and verdict.passed):
        return False
    try:
        aliases.promote(name, version, expected=compared_with)
    except aliases.ChampionMoved as moved:
        model_versions.tag_version(name, version, {"gate.promotion": f"not promoted: {moved}"})
        return False
    return True


def _held(verdict: Verdict) -> str:
    """Why a version that was judged is not promoted."""
    if not verdict.passed:
        return "not promoted: the gate failed"
    return "not promoted: a candidate of a DVC experiment (pipelines promote moves the alias)"


def write_lineage(
    cfg: PipelineConfig,
    name: str,
    run_id: str,
    record: Registration,
    passed: bool,
    tags: dict,
    params: dict,
    ev: Evidence,
) -> None:
    """`lineage.json` on the run: code, data, params, library versions and the verdict."""
    dataset = cfg.entry(name).dataset
    run_logging.log_dict(
        run_id,
        {
            "model": {
                "name": name,
                "version": record.version,
                "md5": record.model_md5,
                "promoted": record.promoted,
                "previous_champion": record.previous_champion,
            },
            "git": {key: tags[key] for key in ("git_commit", "git_dirty")},
            "data": {
                "md5": tags["data_md5"],
                # the lock of the folder the stage runs in (an experiment's temp copy, say)
                "dvc_lock": dvc_lock_hashes(
                    Path("dvc.lock"), [f"ingest@{dataset}", f"split@{dataset}"]
                ),
                "split": ev.prep.split,
            },
            "params": params,
            "seed": cfg.base.seed,
            "versions": library_versions(),
            "epochs": {"best": ev.summary["best_epoch"], "stopped": ev.summary["stopped_epoch"]},
            "search": ev.summary.get("search"),
            "test_metrics": ev.metrics,
            "gate": {"passed": passed, "promoted": record.promoted, "checks": record.checks},
        },
        LINEAGE_FILE,
    )


def add_lineage_event(run_id: str, event: dict) -> None:
    """Append `event` to the `events` of the run's `lineage.json` (a decision taken after
    registration, such as a promotion without the champion comparison)."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = run_logging.download_run_artifacts(run_id, LINEAGE_FILE, Path(tmp))
            lineage = json.loads(path.read_text())
        except Exception:  # a run without lineage gets one with the event alone
            lineage = {}
    lineage.setdefault("events", []).append(event)
    run_logging.log_dict(run_id, lineage, LINEAGE_FILE)


def register_model(
    cfg: PipelineConfig,
    model_name: str,
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
    with aliases.model_lock(model_name):
        return _register(cfg, model_name, model_dir, eval_dir, data_dir, raw_data, docs_dir, out)


def _register(
    cfg: PipelineConfig,
    name: str,
    model_dir: Path,
    eval_dir: Path,
    data_dir: Path,
    raw_data: Path,
    docs_dir: Path,
    out: Path,
) -> Registration:
    ev = collect_evidence(model_dir, eval_dir, data_dir, cfg.base.seed)
    cfg = tuned(cfg, name, ev.summary.get("search"))  # the params it was trained with
    for version in model_versions.mark_incomplete_versions(name):
        print(f"{name} version {version} never got a gate verdict: tagged incomplete")
    experiment = Experiment.current()
    md5 = file_md5(model_dir / MODEL_FILE)
    existing = _version_of_file(name, md5)
    if existing is None:
        version = _register_new(
            cfg, name, ev, md5, model_dir, eval_dir, data_dir, raw_data, docs_dir, experiment
        )
    else:
        version = _judge_again(cfg, name, existing, ev, experiment)
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
        print(f"{same}, which is @{aliases.CHAMPION}: nothing to register or promote")
        return True
    if experiment is not None:
        print(
            f"{same} (gate: {existing.tags.get('gate', 'none')}); an experiment moves no "
            f"alias: @{aliases.CHAMPION} stays {champion}"
        )
        return True
    return False


def account_of_known_file(name: str, model_file: Path, out: Path) -> Registration | None:
    """The register stage's quick path, before any flow starts: when `model_file` is already
    a version that needs no verdict (`_nothing_to_judge`), write its account to `out` and
    return it; otherwise None, and the stage runs in full. An experiment's temp copy runs
    register for every model (registration.json is not copied there), so this keeps an
    experiment's cost to the models it changed."""
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
    np.save(folder / "inputs.npy", ev.x_test[:GOLDEN_ROWS])
    np.save(folder / "predictions.npy", ev.predictions[:GOLDEN_ROWS])
    return folder


def _candidate(name: str, version: str, ev: Evidence, golden: Path) -> Candidate:
    return Candidate(
        name=name,
        version=version,
        test_metrics=ev.metrics["test"],
        baselines=ev.metrics["baselines"],
        golden_inputs=golden / "inputs.npy",
        golden_predictions=ev.predictions[:GOLDEN_ROWS],
        split=ev.prep.split,
        predictions=ev.predictions,
    )


def _register_new(
    cfg: PipelineConfig,
    name: str,
    ev: Evidence,
    md5: str,
    model_dir: Path,
    eval_dir: Path,
    data_dir: Path,
    raw_data: Path,
    docs_dir: Path,
    experiment: Experiment | None,
) -> str:
    """Log the run, register the model file as a new version, judge it and record the
    verdict; returns the version."""
    entry = cfg.entry(name)
    champion_before = aliases.alias_version(name)
    tags, params, run_metrics = run_record(cfg, name, raw_data, ev)
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
            inputs=split_inputs(entry.dataset, data_dir),
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
                metadata=model_metadata(name, entry.problem, ev.prep),
                model_artifacts={"reference": data_dir / REFERENCE_FILE},
            )
            run_logging.set_run_tags(run_id, {REGISTERED_TAG: version})
            # The run stays open until the verdict is recorded: a RUNNING run's version is a
            # registration in flight, which `mark_incomplete_versions` leaves alone.
            verdict = judge(
                entry.gate,
                _candidate(name, version, ev, golden),
                champion_before,
                Rows(ev.table, ev.prep),
                cfg.base.seed,
            )
            record_verdict(name, version, verdict, champion_before, experiment is None)
    record = registration_record(name, version)
    write_lineage(cfg, name, run_id, record, verdict.passed, tags, params, ev)
    _say(record, champion_before, verdict, experiment)
    return version


def _judge_again(
    cfg: PipelineConfig,
    name: str,
    existing: model_versions.VersionInfo,
    ev: Evidence,
    experiment: Experiment | None,
) -> str:
    """The model file is already version `existing`: judge it on the main line unless it is
    the champion already; under an experiment, leave it as it is."""
    version = existing.version
    champion_before = aliases.alias_version(name)
    if _nothing_to_judge(name, existing, champion_before, experiment):
        return version
    print(
        f"{name}: the model file is already registered as version {version}; judging it "
        f"against @{aliases.CHAMPION} ({champion_before or 'none'})"
    )
    with tempfile.TemporaryDirectory() as tmp:
        golden = _with_golden(ev, Path(tmp))
        verdict = judge(
            cfg.entry(name).gate,
            _candidate(name, version, ev, golden),
            champion_before,
            Rows(ev.table, ev.prep),
            cfg.base.seed,
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
        print(
            f"{name} version {version} registered as a candidate of experiment "
            f"{experiment.name} (it {'passes' if verdict.passed else 'fails'} the gate); "
            f"@{aliases.CHAMPION} stays {champion_before}. Promote it with: "
            f"pipelines promote {name} {version}"
        )
    elif record.promoted:
        print(
            f"{name} version {version} is @{aliases.CHAMPION}"
            + (
                f"; version {champion_before} is @{aliases.PREVIOUS_CHAMPION}"
                if champion_before
                else ""
            )
        )
    elif verdict.passed:
        print(
            f"{name} version {version} passed the gate but was NOT promoted: @{aliases.CHAMPION}"
            f" moved from {champion_before} during the comparison. Compare it with the new "
            f"champion: pipelines promote {name} {version}"
        )
    else:
        print(
            f"{name} version {version} registered but NOT promoted; @{aliases.CHAMPION} "
            f"stays {champion_before}. Failed: " + " | ".join(verdict.failures)
        )


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


def promote_version(
    cfg: PipelineConfig,
    name: str,
    version: str,
    data_dir: Path,
    without_comparison: bool = False,
) -> str | None:
    """`pipelines promote`: rerun the gate for a registered version (a candidate of a DVC
    experiment, say) and move `@champion` to it only if it passes: the thresholds on its test
    metrics, non-inferiority to the current champion on current test rows that neither model
    trained on, and fresh-process parity on its golden sample. A version trained on another
    split (salt, seed or shares) is refused: rows it trained on may be current test rows.
    `without_comparison` leaves out the champion comparison (for a deliberate schema change)
    and records that on the version and in its lineage. Raises `GateRefused` naming what
    failed. Returns the previous champion."""
    with aliases.model_lock(name):
        previous = _promote(cfg, name, version, data_dir, without_comparison)
    refresh_registration_file(cfg, name)
    return previous


def _promote(
    cfg: PipelineConfig, name: str, version: str, data_dir: Path, without_comparison: bool
) -> str | None:
    gate = cfg.entry(name).gate
    info = model_versions.version_info(name, version)
    champion = aliases.alias_version(name)
    if champion == info.version:
        print(f"{name} version {info.version} is already @{aliases.CHAMPION}")
        return None
    prep = Preprocessing.load(data_dir / SPEC_FILE)
    split = json.loads(info.tags.get(SPLIT_TAG) or "{}")
    skip = None
    if without_comparison:
        skip = f"left out on purpose ({WITHOUT_COMPARISON})"
    elif champion is not None:
        why = split_mismatch(split, prep.split)
        if why:
            raise GateRefused(
                f"{name} version {info.version} not promoted: it cannot be compared on the "
                f"current test rows: {why}. Retrain it on the current split (dvc exp run), or "
                f"replace the champion without the comparison: pipelines promote {name} "
                f"{info.version} {WITHOUT_COMPARISON}"
            )
    test, baselines = _metrics_of_run(run_logging.run_metrics(info.run_id))
    with tempfile.TemporaryDirectory() as tmp:
        golden = run_logging.download_run_artifacts(info.run_id, run_logging.GOLDEN_DIR, Path(tmp))
        _, table = comparison_rows(data_dir, prep, cfg.base.seed)
        candidate = Candidate(
            name=name,
            version=info.version,
            test_metrics=test,
            baselines=baselines,
            golden_inputs=golden / "inputs.npy",
            golden_predictions=np.load(golden / "predictions.npy"),
            split=split,
        )
        verdict = judge(gate, candidate, champion, Rows(table, prep), cfg.base.seed, skip)
    # The version's gate tags now hold this verdict (the latest), and the alias moves only if
    # it passed and `@champion` is still the version it was compared with.
    promoted = record_verdict(
        name,
        info.version,
        verdict,
        champion,
        promote=True,
        extra_tags={
            "gate.promote": ("passed: " if verdict.passed else "refused: ")
            + (" | ".join(verdict.failures) or f"against champion {champion}"),
            **({"gate.champion_comparison": f"skipped: {skip}"} if skip else {}),
        },
    )
    if not verdict.passed:
        raise GateRefused(
            f"{name} version {info.version} not promoted; @{aliases.CHAMPION} stays "
            f"{champion}. Failed: " + " | ".join(verdict.failures)
        )
    if not promoted:
        moved = model_versions.version_info(name, info.version).tags.get("gate.promotion", "")
        raise GateRefused(f"{name} version {info.version} {moved}")
    previous = champion
    if skip:
        add_lineage_event(
            info.run_id,
            {
                "event": f"promoted by pipelines promote {WITHOUT_COMPARISON}",
                "replaced": champion,
                "checks": [asdict(c) for c in verdict.checks],
            },
        )
    print(
        f"{name} version {info.version} is @{aliases.CHAMPION}"
        + (f"; version {previous} is @{aliases.PREVIOUS_CHAMPION}" if previous else "")
    )
    return previous
