"""The absolute part of the quality gate: thresholds and trivial baselines."""

from __future__ import annotations

import numpy as np

from pipelines.config import GateConfig
from pipelines.registry.gate import apply_gate
from pipelines.registry.promotion import bootstrap_check, mcnemar_check

TEST = {"accuracy": 0.97, "roc_auc": 0.99, "f1": 0.975, "log_loss": 0.09}
BASELINE = {"majority": {"accuracy": 0.63, "roc_auc": 0.5, "f1": 0.77, "log_loss": 0.66}}


def test_gate_passes_when_every_check_passes():
    gate = GateConfig(
        min={"accuracy": 0.95, "roc_auc": 0.97},
        max={"log_loss": 0.3},
        beat_baseline=["accuracy", "f1", "log_loss"],
    )
    verdict = apply_gate(gate, TEST, BASELINE)
    assert verdict.passed and not verdict.failures
    assert len(verdict.checks) == 6


def test_gate_fails_on_a_floor_and_says_by_how_much():
    verdict = apply_gate(GateConfig(min={"accuracy": 0.99}), TEST, BASELINE)
    assert not verdict.passed
    assert verdict.failures == ["accuracy 0.9700 >= 0.99"]
    assert "FAIL  accuracy 0.9700 >= 0.99" in verdict.checks


def test_gate_fails_on_a_ceiling():
    assert not apply_gate(GateConfig(max={"log_loss": 0.05}), TEST, BASELINE).passed


def test_gate_fails_when_the_baseline_is_not_beaten():
    weak = {**TEST, "accuracy": 0.60, "log_loss": 0.7}
    verdict = apply_gate(GateConfig(beat_baseline=["accuracy", "log_loss"]), weak, BASELINE)
    assert len(verdict.failures) == 2
    assert verdict.failures[0] == "accuracy 0.6000 beats majority 0.6300"


def test_a_forecast_must_beat_every_baseline():
    test = {"mae": 0.30, "rmse": 0.40, "mape": 0.08}
    baselines = {
        "persistence": {"mae": 0.40, "rmse": 0.51, "mape": 0.11},
        "seasonal_naive": {"mae": 0.25, "rmse": 1.84, "mape": 0.45},
    }
    verdict = apply_gate(GateConfig(beat_baseline=["mae", "rmse"]), test, baselines)
    assert verdict.failures == ["mae 0.3000 beats seasonal_naive 0.2500"]
    assert len(verdict.checks) == 4


def test_a_metric_the_task_does_not_compute_fails_clearly():
    verdict = apply_gate(GateConfig(min={"accuracy": 0.9}), {"mae": 0.3}, {})
    assert verdict.failures == ["accuracy is not computed for this task (has: mae)"]


def test_mcnemar_refuses_a_clearly_worse_challenger_only():
    champion = np.ones(100, dtype=bool)
    worse = champion.copy()
    worse[:12] = False
    assert not mcnemar_check(champion, worse, alpha=0.05).passed
    slightly = champion.copy()
    slightly[:1] = False
    check = mcnemar_check(champion, slightly, alpha=0.05)
    assert check.passed and "on 1" in check.detail
    assert mcnemar_check(worse, champion, alpha=0.05).passed


def test_paired_bootstrap_uses_the_tolerance():
    rng = np.random.default_rng(0)
    champion = rng.normal(0, 0.3, 400)
    challenger = champion * 1.5
    assert not bootstrap_check(champion, challenger, 0.05, 0.0, 1000, seed=1).passed
    assert bootstrap_check(champion, challenger, 0.05, 1.0, 1000, seed=1).passed
    assert bootstrap_check(champion, champion * 0.9, 0.05, 0.0, 1000, seed=1).passed
