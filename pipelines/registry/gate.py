"""The quality gate's thresholds: which test metrics a registered version needs before it may be
promoted to `@champion` (every version is registered; the gate decides promotion)."""

from __future__ import annotations

from dataclasses import dataclass, field

from pipelines.model.metrics import better
from pipelines.model_config import GateConfig


@dataclass(frozen=True)
class GateVerdict:
    passed: bool
    failures: list[str] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)


def apply_gate(
    gate: GateConfig,
    test: dict[str, float],
    baselines: dict[str, dict[str, float]],
    primary: str | None = None,
) -> GateVerdict:
    """Check absolute floors and ceilings, then that the model beats every trivial baseline
    (majority class; persistence and seasonal-naive for forecasts) on each `beat_baseline`
    metric and always on the `primary` metric, so a model with no gate settings still has to
    beat them."""
    checks: list[str] = []
    failures: list[str] = []

    def record(ok: bool, text: str) -> None:
        checks.append(("ok    " if ok else "FAIL  ") + text)
        if not ok:
            failures.append(text)

    beat = list(dict.fromkeys([*gate.beat_baseline, *([primary] if primary else [])]))
    named = [*gate.min, *gate.max, *beat]
    for name in dict.fromkeys(n for n in named if n not in test):
        record(False, f"{name} is not computed for this model (has: {', '.join(test)})")
    for name, floor in gate.min.items():
        if name in test:
            record(test[name] >= floor, f"{name} {test[name]:.4f} >= {floor}")
    for name, ceiling in gate.max.items():
        if name in test:
            record(test[name] <= ceiling, f"{name} {test[name]:.4f} <= {ceiling}")
    for name in (n for n in beat if n in test):
        for baseline, values in baselines.items():
            record(
                better(name, test[name], values[name]),
                f"{name} {test[name]:.4f} beats {baseline} {values[name]:.4f}",
            )
    return GateVerdict(passed=not failures, failures=failures, checks=checks)
