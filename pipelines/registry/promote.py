"""`pipelines promote`: rerun the gate for a registered version and move `@champion` to it
only if it passes."""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np

from pipelines.config import PipelineConfig
from pipelines.data.preprocessing import (
    SPEC_FILE,
    Preprocessing,
)
from pipelines.errors import GateRefused
from pipelines.model_config import ModelRef
from pipelines.registry.evidence import comparison_rows
from pipelines.registry.lineage_record import add_lineage_event
from pipelines.registry.promotion import (
    GOLDEN_INPUTS_FILE,
    GOLDEN_PREDICTIONS_FILE,
    SPLIT_TAG,
    WITHOUT_COMPARISON,
    Candidate,
    Rows,
    judge,
    split_mismatch,
)
from pipelines.registry.tracking import aliases, model_versions, run_logging
from pipelines.registry.verdicts import record_verdict, refresh_registration_file

log = logging.getLogger(__name__)


def _metrics_of_run(
    values: dict[str, float],
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
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
    model: ModelRef,
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
    with aliases.model_lock(model.name):
        previous = _promote(cfg, model, version, data_dir, without_comparison)
    refresh_registration_file(cfg, model.name)
    return previous


def _promote(
    cfg: PipelineConfig, model: ModelRef, version: str, data_dir: Path, without_comparison: bool
) -> str | None:
    name, gate = model.name, model.gate
    info = model_versions.version_info(name, version)
    champion = aliases.alias_version(name)
    if champion == info.version:
        log.info(f"{name} version {info.version} is already @{aliases.CHAMPION}")
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
            golden_inputs=golden / GOLDEN_INPUTS_FILE,
            golden_predictions=np.load(golden / GOLDEN_PREDICTIONS_FILE),
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
    log.info(
        f"{name} version {info.version} is @{aliases.CHAMPION}"
        + (f"; version {previous} is @{aliases.PREVIOUS_CHAMPION}" if previous else "")
    )
    return previous
