"""params.yaml errors name the key; the shipped params are valid."""

from __future__ import annotations

import copy

import pytest

from pipelines.config import load_config, parse_config
from pipelines.errors import ConfigError


def _with(raw: dict, path: str, value, delete: bool = False) -> dict:
    out = copy.deepcopy(raw)
    node = out
    *parents, leaf = path.split(".")
    for key in parents:
        node = node[key]
    if delete:
        del node[leaf]
    else:
        node[leaf] = value
    return out


def test_shipped_params_are_valid(repo_root):
    cfg = load_config(repo_root / "params.yaml")
    assert cfg.entry("tabular-dnn").family == "dnn"
    assert cfg.dataset("breast_cancer").modality == "tabular"
    assert cfg.model_params("tabular-dnn").units == [32]


@pytest.mark.parametrize(
    ("path", "value", "named"),
    [
        ("models.tabular-dnn.train.lerning_rate", 0.1, "models.tabular-dnn.train.lerning_rate"),
        ("base.sead", 1, "base.sead"),
        ("models.tabular-dnn.train.batch_size", "big", "models.tabular-dnn.train.batch_size"),
        ("models.tabular-dnn.train.learning_rate", -0.01, "models.tabular-dnn.train.learning_rate"),
        ("models.tabular-dnn.train.patience", -1, "models.tabular-dnn.train.patience"),
        ("models.tabular-dnn.train.optimizer", "adamax", "models.tabular-dnn.train.optimizer"),
        ("datasets.breast_cancer.split.test", 0.9, "datasets.breast_cancer.split.test"),
        ("datasets.digits.split.tolerance", 0.0, "datasets.digits.split.tolerance"),
        ("datasets.digits.split.tolerance", 0.5, "datasets.digits.split.tolerance"),
        ("datasets.digits.split.salt", "", "datasets.digits.split.salt"),
        ("datasets.digits.split.seed", 3, "datasets.digits.split.seed"),
        ("models.tabular-dnn.model.units", [32, 0], "models.tabular-dnn.model.units.1"),
        ("models.tabular-dnn.model.widht", 3, "models.tabular-dnn.model.widht"),
        ("models.tabular-dnn.gate.min", {"acuracy": 0.9}, "models.tabular-dnn.gate"),
    ],
)
def test_bad_value_names_the_key(raw_params, path, value, named):
    with pytest.raises(ConfigError) as err:
        parse_config(_with(raw_params, path, value))
    assert named in str(err.value)


def test_unknown_family_lists_known_ones(raw_params):
    with pytest.raises(ConfigError) as err:
        parse_config(_with(raw_params, "models.tabular-dnn.family", "resnet"))
    message = str(err.value)
    assert "models.tabular-dnn" in message and "'resnet'" in message and "dnn" in message


def test_unknown_dataset_reference(raw_params):
    with pytest.raises(ConfigError, match=r"models\.tabular-dnn\.dataset: unknown dataset 'iris'"):
        parse_config(_with(raw_params, "models.tabular-dnn.dataset", "iris"))


def test_missing_required_key(raw_params):
    with pytest.raises(ConfigError, match=r"datasets\.breast_cancer\.source"):
        parse_config(_with(raw_params, "datasets.breast_cancer.source", None, delete=True))


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="params file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "params.yaml"
    bad.write_text("base: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_lookup_of_unknown_task_lists_known(repo_root):
    cfg = load_config(repo_root / "params.yaml")
    with pytest.raises(ConfigError, match="known: tabular"):
        cfg.entry("images")
    with pytest.raises(ConfigError, match=r"models\.images: no such model \(known: tabular"):
        cfg.model("images")


def test_a_resolved_model_holds_its_entry_and_params(repo_root):
    """`cfg.model(name)` resolves a model once; a tuned config resolves to the tuned params."""
    cfg = load_config(repo_root / "params.yaml")
    model = cfg.model("tabular-dnn")
    entry = cfg.entry("tabular-dnn")
    assert (model.name, model.entry) == ("tabular-dnn", entry)
    assert (model.dataset, model.family, model.problem) == (entry.dataset, "dnn", entry.problem)
    assert model.train == entry.train and model.gate == entry.gate
    assert model.params == cfg.model_params("tabular-dnn")
    changes = {"model.units": [8], "train.learning_rate": 0.02}
    again = cfg.with_overrides("tabular-dnn", changes).model("tabular-dnn")
    assert again.params.units == [8] and again.train.learning_rate == 0.02
    assert model.params.units == [32]  # the first one is untouched
    assert cfg.tuned(model, changes) == again and cfg.tuned(model, {}) is model
    with pytest.raises(ConfigError, match=r"models\.tabular-dnn: cannot override 'gate\.min'"):
        cfg.tuned(model, {"gate.min": {}})


def test_family_must_fit_the_dataset_modality(raw_params):
    with pytest.raises(
        ConfigError, match=r"models\.tabular-dnn\.family: family 'cnn' takes images"
    ):
        parse_config(_with(raw_params, "models.tabular-dnn.family", "cnn"))


def test_sequence_dataset_needs_series_settings(raw_params):
    with pytest.raises(ConfigError, match=r"datasets\.co2.*series: required"):
        parse_config(_with(raw_params, "datasets.co2.series", None, delete=True))
    with pytest.raises(ConfigError, match=r"datasets\.co2\.series\.window"):
        parse_config(_with(raw_params, "datasets.co2.series.window", 1))


def test_transformer_heads_must_divide_d_model(raw_params):
    with pytest.raises(ConfigError, match=r"models\.sequence-transformer\.model.*divisible"):
        parse_config(_with(raw_params, "models.sequence-transformer.model.heads", 3))


def test_every_family_has_a_task_in_the_shipped_params(repo_root):
    from pipelines.families import FAMILIES

    cfg = load_config(repo_root / "params.yaml")
    assert {t.family for t in cfg.models.values()} == set(FAMILIES)
    assert sorted(cfg.models) == [
        "images-cnn",
        "sequence-lstm",
        "sequence-transformer",
        "tabular-dnn",
        "text-dnn",
        "text-transformer",
    ]


def test_distribution_strategy_choices(raw_params):
    cfg = parse_config(_with(raw_params, "models.tabular-dnn.train.distribute", "mirrored"))
    assert cfg.entry("tabular-dnn").train.distribute == "mirrored"
    with pytest.raises(ConfigError, match=r"train\.distribute: .*keras-team/keras#20585"):
        parse_config(
            _with(raw_params, "models.tabular-dnn.train.distribute", "multi_worker_mirrored")
        )
    with pytest.raises(ConfigError, match=r"train\.distribute: .*unknown strategy 'tpu'"):
        parse_config(_with(raw_params, "models.tabular-dnn.train.distribute", "tpu"))


def test_orchestration_settings(raw_params):
    cfg = parse_config(raw_params)
    assert cfg.orchestration.schedule == "0 3 * * 1"  # weekly
    with pytest.raises(ConfigError, match=r"orchestration\.schedule: .*5-field cron"):
        parse_config(_with(raw_params, "orchestration.schedule", "weekly"))
    with pytest.raises(ConfigError, match=r"orchestration\.task_runner"):
        parse_config(_with(raw_params, "orchestration.task_runner", "ray"))


def test_check_params_names_the_sections_dvc_needs(tmp_path, raw_params):
    import copy

    import yaml

    from pipelines.orchestration.project import check_params_file

    params = copy.deepcopy(raw_params)
    params["models"]["extra-dnn"] = {
        "problem": "tabular",
        "dataset": "breast_cancer",
        "family": "dnn",
    }
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    load_config(path)  # valid for the pipeline: the sections have defaults
    with pytest.raises(ConfigError, match=r"models\.extra-dnn\.model, models\.extra-dnn\.train"):
        check_params_file(path)
    params["models"]["extra-dnn"].update(model={}, train={}, gate={})
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    assert "extra-dnn" in check_params_file(path).models


def test_renamed_keys_name_their_new_names(raw_params):
    import copy

    params = copy.deepcopy(raw_params)
    params["tasks"] = params.pop("models")
    with pytest.raises(ConfigError, match=r"tasks: renamed to `models`"):
        parse_config(params)
    params = copy.deepcopy(raw_params)
    entry = params["models"]["tabular-dnn"]
    entry["task"] = entry.pop("problem")
    with pytest.raises(ConfigError, match=r"models\.tabular-dnn\.task: renamed to `problem`"):
        parse_config(params)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("models.tabular-dnn.gate.champion_tolerance", 0.1, "replaced by champion_margin"),
        ("models.tabular-dnn.gate.primary_metric", "mae", "gate.primary_metric: 'mae' is not"),
        ("models.tabular-dnn.gate.primary_metric", "roc_auc", "not a mean over rows"),
        ("models.tabular-dnn.gate.champion_margin", 1.5, "champion_margin"),
    ],
)
def test_gate_settings_name_the_problem(raw_params, path, value, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(_with(raw_params, path, value))


def test_split_salt_key_and_tolerance(raw_params):
    split = parse_config(raw_params).dataset("breast_cancer").split
    assert (split.salt, split.key, split.tolerance) == (None, None, 0.05)
    params = _with(
        raw_params,
        "datasets.breast_cancer.split",
        {"validation": 0.1, "test": 0.2, "salt": "v2", "key": "patient_id", "tolerance": 0.08},
    )
    split = parse_config(params).dataset("breast_cancer").split
    assert (split.salt, split.key, split.tolerance) == ("v2", "patient_id", 0.08)
