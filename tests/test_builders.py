"""Every registered family gets the same tests: shape, preprocessing inside, save/load parity
on raw input, and a loss that falls on a tiny batch."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.builders import FAMILIES, build_model, family_spec
from pipelines.config import TrainConfig
from pipelines.preprocessing import Preprocessing, fit_normalization


@pytest.fixture(scope="module")
def tabular_example(_breast_cancer):
    features = [c for c in _breast_cancer.columns if c != "target"]
    x = _breast_cancer[features].to_numpy("float64")[:128]
    y = _breast_cancer["target"].to_numpy("int64")[:128]
    prep = Preprocessing(
        "tabular", features, "target", [0, 1], [len(features)], fit_normalization(x)
    )
    return prep, x, y


@pytest.fixture(scope="module")
def examples(tabular_example):
    """One small real example (preprocessing, raw x, y) per modality."""
    return {"tabular": tabular_example}


TABULAR_FAMILIES = [name for name, spec in FAMILIES.items() if "tabular" in spec.modalities]


def _build(family, prep, **train):
    cfg = TrainConfig(**{"learning_rate": 1e-2, **train})
    return build_model(family, family_spec(family).params(), prep, cfg)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_output_is_class_probabilities(family, examples):
    prep, x, _ = examples[FAMILIES[family].modalities[0]]
    proba = _build(family, prep).predict(x, verbose=0)
    assert proba.shape == (len(x), len(prep.classes))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("family", TABULAR_FAMILIES)
def test_model_carries_its_normalization(family, tabular_example):
    import keras

    prep, x, _ = tabular_example
    model = _build(family, prep)
    norm = model.get_layer("normalize")
    assert isinstance(norm, keras.layers.Normalization)
    normalized = keras.Model(model.inputs, norm.output).predict(x, verbose=0)
    expected = (x - np.array(prep.stats["mean"])) / np.sqrt(np.array(prep.stats["variance"]))
    np.testing.assert_allclose(normalized, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_save_and_load_give_identical_predictions_on_raw_input(family, examples, tmp_path):
    import keras

    prep, x, y = examples[FAMILIES[family].modalities[0]]
    model = _build(family, prep)
    model.fit(x, y, epochs=2, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(model.predict(x, verbose=0), loaded.predict(x, verbose=0))


@pytest.mark.parametrize("family", list(FAMILIES))
def test_loss_falls_on_a_tiny_batch(family, examples):
    import keras

    keras.utils.set_random_seed(0)
    prep, x, y = examples[FAMILIES[family].modalities[0]]
    model = _build(family, prep)
    history = model.fit(x[:64], y[:64], epochs=30, batch_size=16, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.5 * losses[0]


def test_unknown_family_lists_the_known_ones(tabular_example):
    with pytest.raises(ValueError, match=r"unknown model family 'vit' \(known: dnn"):
        build_model("vit", {}, tabular_example[0], TrainConfig())


def test_hyperparameters_come_from_params(tabular_example):
    prep = tabular_example[0]
    model = build_model("dnn", {"units": [7, 5], "dropout": 0.0}, prep, TrainConfig())
    dense = [layer.units for layer in model.layers if layer.name.startswith("dense_")]
    assert dense == [7, 5]
    assert not [layer for layer in model.layers if layer.name.startswith("dropout_")]
