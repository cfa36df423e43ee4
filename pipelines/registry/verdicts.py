"""A version's verdict in the registry: the gate's checks written as the version's tags,
`@champion` moved by compare-and-set (`record_verdict`), and read back as the registry's
account of the version, `registration.json` (`registration_record`), so that the file says what
the registry says whichever path wrote it."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pipelines.config import PipelineConfig
from pipelines.registry.promotion import (
    Verdict,
)
from pipelines.registry.tracking import aliases, model_versions

log = logging.getLogger(__name__)

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
    checks: list[dict[str, Any]]
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


def record_verdict(
    name: str,
    version: str,
    verdict: Verdict,
    compared_with: str | None,
    promote: bool,
    extra_tags: dict[str, Any] | None = None,
) -> bool:
    """Tag the version with the gate's verdict and, if it passed and `promote`, move
    `@champion` to it, only if `@champion` is still `compared_with` (compare-and-set).
    Returns whether it was promoted."""
    for check in verdict.checks:
        log.info(f"{'ok  ' if check.passed else 'FAIL'} {check.name}: {check.detail}")
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
