"""The retraining flow's markdown summary: each model's test metrics and gate verdict."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipelines.config import PipelineConfig
from pipelines.model_config import ModelRef


def summary_markdown(
    root: Path, cfg: PipelineConfig, models: list[ModelRef], outcome: dict[str, dict[str, Any]]
) -> str:
    """A table of each model's test metrics and gate verdict, what this run did, and the
    registry's live `@champion` beside it. For a model this run did not retrain, the verdict
    is the last registration's (its `registration.json`, the registry's account of it), and
    says so: only the live alias tells who is champion now."""
    from pipelines.model.evaluation import METRICS_FILE
    from pipelines.registry.tracking import aliases
    from pipelines.registry.verdicts import REGISTRATION_FILE

    rows = [
        "| model | family | test metrics | version | gate | this run | @champion now |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for model in models:
        name = model.name
        result = outcome.get(name)
        live = aliases.alias_version(name) or "none"
        if result and result["error"]:
            failure = result["error"].splitlines()[0].replace("|", "/")
            rows.append(f"| {name} | {model.family} | - | - | - | FAILED {failure} | {live} |")
            continue
        metrics_file = root / cfg.paths.reports / name / METRICS_FILE
        registration_file = root / cfg.paths.models / name / REGISTRATION_FILE
        metrics = json.loads(metrics_file.read_text())["test"] if metrics_file.exists() else {}
        shown = ", ".join(f"{k} {v:.4g}" for k, v in list(metrics.items())[:4]) or "-"
        reg = json.loads(registration_file.read_text()) if registration_file.exists() else {}
        gate = _gate_summary(reg, live)
        if not result:
            gate = f"last registration: {gate}"
        rows.append(
            f"| {name} | {model.family} | {shown} | {reg.get('version', '-')} | "
            f"{gate} | {'retrained' if result else 'up to date'} | {live} |"
        )
    errors = [
        f"### {name}\n\n```\n{result['error']}\n```"
        for name, result in outcome.items()
        if result.get("error")
    ]
    return "\n".join(rows) + ("\n\n## Failures\n\n" + "\n\n".join(errors) if errors else "")


def _gate_summary(reg: dict[str, Any], live: str) -> str:
    """One cell: the gate's verdict on the version and where it stands in the registry now."""
    if not reg:
        return "-"
    if str(reg.get("version")) == live:
        return "@champion"
    if reg.get("gate") == "passed":
        return "passed, not @champion: " + (reg.get("not_promoted_because") or "")[:200]
    return "not promoted: " + "; ".join(reg.get("gate_failures", []))[:200]
