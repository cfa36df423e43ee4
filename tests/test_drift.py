"""Drift scores on the real datasets: same distribution scores low, a shift scores high."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines.data.datasets import load_source
from pipelines.data.drift import drift_features, reference_profile, score_drift


def _score(reference: pd.DataFrame, new: pd.DataFrame, modality: str, label: str, time=None):
    profile = reference_profile(drift_features(reference, modality, label, time))
    return score_drift(profile, drift_features(new, modality, label, time), 0.25, 0.2, "test")


def test_tabular_halves_agree_and_a_shifted_feature_is_caught(breast_cancer):
    shuffled = breast_cancer.sample(frac=1.0, random_state=0).reset_index(drop=True)
    first, second = shuffled.iloc[:300], shuffled.iloc[300:]
    calm = _score(first, second, "tabular", "target")
    assert len(calm.features) == 30 and calm.breaches == []
    moved = second.assign(mean_area=second.mean_area * 1.5)
    report = _score(first, moved, "tabular", "target")
    assert [f.feature for f in report.breaches] == ["mean_area"]
    assert report.metrics()["drift_psi.mean_area"] > 0.25


def test_images_are_profiled_per_image_and_brighter_images_drift():
    digits = load_source("sklearn:digits")
    first, second = digits.iloc[:900], digits.iloc[900:]
    calm = _score(first, second, "images", "target")
    assert {f.feature for f in calm.features} == {"mean_intensity", "std_intensity", "lit_share"}
    assert calm.breaches == []
    pixels = [c for c in digits.columns if c.startswith("pixel_")]
    brighter = second.copy()
    brighter[pixels] = np.minimum(brighter[pixels] * 1.6, 16)
    report = _score(first, brighter, "images", "target")
    assert "mean_intensity" in {f.feature for f in report.breaches}


def test_series_are_profiled_by_their_step_change():
    co2 = load_source("statsmodels:co2")
    first, second = co2.iloc[:1500], co2.iloc[1500:]
    calm = _score(first, second, "sequence", "co2", "date")
    assert [f.feature for f in calm.features] == ["step_change"] and calm.breaches == []
    noisy = second.assign(co2=second.co2 + np.random.default_rng(0).normal(0, 2, len(second)))
    assert _score(first, noisy, "sequence", "co2", "date").breaches


@pytest.mark.parametrize("modality", ["images", "sequence"])
def test_a_table_missing_its_columns_gives_no_features(modality):
    assert drift_features(pd.DataFrame({"x": [1.0, 2.0]}), modality, "co2", "date").empty
