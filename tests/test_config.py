"""params.yaml errors name the key; the shipped params are valid."""

from __future__ import annotations

import copy

import pytest

from pipelines.config import ConfigError, load_config, parse_config


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
    assert cfg.task("tabular").family == "dnn"
    assert cfg.dataset("breast_cancer").modality == "tabular"
    assert cfg.model_params("tabular").units == [32]


@pytest.mark.parametrize(
    ("path", "value", "named"),
    [
        ("tasks.tabular.train.lerning_rate", 0.1, "tasks.tabular.train.lerning_rate"),
        ("base.sead", 1, "base.sead"),
        ("tasks.tabular.train.batch_size", "big", "tasks.tabular.train.batch_size"),
        ("tasks.tabular.train.learning_rate", -0.01, "tasks.tabular.train.learning_rate"),
        ("tasks.tabular.train.patience", -1, "tasks.tabular.train.patience"),
        ("tasks.tabular.train.optimizer", "adamax", "tasks.tabular.train.optimizer"),
        ("datasets.breast_cancer.split.test", 0.9, "datasets.breast_cancer.split.test"),
        ("tasks.tabular.model.units", [32, 0], "tasks.tabular.model.units.1"),
        ("tasks.tabular.model.widht", 3, "tasks.tabular.model.widht"),
        ("tasks.tabular.gate.min", {"acuracy": 0.9}, "tasks.tabular.gate"),
    ],
)
def test_bad_value_names_the_key(raw_params, path, value, named):
    with pytest.raises(ConfigError) as err:
        parse_config(_with(raw_params, path, value))
    assert named in str(err.value)


def test_unknown_family_lists_known_ones(raw_params):
    with pytest.raises(ConfigError) as err:
        parse_config(_with(raw_params, "tasks.tabular.family", "resnet"))
    message = str(err.value)
    assert "tasks.tabular" in message and "'resnet'" in message and "dnn" in message


def test_unknown_dataset_reference(raw_params):
    with pytest.raises(ConfigError, match=r"tasks\.tabular\.dataset: unknown dataset 'iris'"):
        parse_config(_with(raw_params, "tasks.tabular.dataset", "iris"))


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
        cfg.task("images")
