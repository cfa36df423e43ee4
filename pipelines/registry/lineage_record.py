"""`lineage.json` on a training run: code, data, params, library versions and the verdict,
with the events (decisions taken after registration) appended to it."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from pipelines.config import PipelineConfig
from pipelines.model_config import ModelRef
from pipelines.registry.evidence import Evidence
from pipelines.registry.lineage import dvc_lock_hashes, library_versions
from pipelines.registry.tracking import run_logging
from pipelines.registry.verdicts import Registration

LINEAGE_FILE = "lineage.json"


def write_lineage(
    cfg: PipelineConfig,
    model: ModelRef,
    run_id: str,
    record: Registration,
    passed: bool,
    tags: dict[str, str],
    params: dict[str, Any],
    ev: Evidence,
) -> None:
    """`lineage.json` on the run: code, data, params, library versions and the verdict."""
    dataset = model.dataset
    run_logging.log_dict(
        run_id,
        {
            "model": {
                "name": model.name,
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


def add_lineage_event(run_id: str, event: dict[str, Any]) -> None:
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
