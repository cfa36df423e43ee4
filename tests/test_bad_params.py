"""Bad params, tried for real: each case names the key in one line, exits non-zero, trains
nothing and leaves the registry as it was."""

from __future__ import annotations

import pytest
import yaml

from tests.bad_input import NAME, invoke, registered_project, registry_state


@pytest.fixture(scope="module")
def project(tmp_path_factory, raw_params, repo_root):
    with registered_project(tmp_path_factory, raw_params, repo_root) as root:
        yield root


def _set(params: dict, dotted: str, value) -> dict:
    node = params
    *parents, leaf = dotted.split(".")
    for key in parents:
        node = node[key]
    node[leaf] = value
    return params


PARAM_CASES = [
    ("unknown-key", "models.tabular-dnn.train.learning_rat", 0.1, "train.learning_rat: Extra"),
    ("wrong-type", "models.tabular-dnn.train.batch_size", "big", "train.batch_size: Input should"),
    ("negative-lr", "models.tabular-dnn.train.learning_rate", -0.01, "learning_rate: Input should"),
    ("negative-patience", "models.tabular-dnn.train.patience", -1, "train.patience: Input should"),
    ("unknown-family", "models.tabular-dnn.family", "resnet", "unknown model family 'resnet'"),
]


@pytest.mark.parametrize(
    ("case", "key", "value", "fragment"), PARAM_CASES, ids=[c[0] for c in PARAM_CASES]
)
def test_bad_params_are_named_and_nothing_trains(project, capsys, case, key, value, fragment):
    before = registry_state()
    params = _set(yaml.safe_load((project / "params.yaml").read_text()), key, value)
    path = project / f"params-{case}.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    out_dir = project / "models" / case
    code, output = invoke(
        ["train", NAME, "--data-dir", "data", "--out-dir", str(out_dir), "--params", str(path)],
        capsys,
    )
    assert code == 1, output
    assert fragment in output
    assert not out_dir.exists(), "nothing may be trained"
    assert registry_state() == before
