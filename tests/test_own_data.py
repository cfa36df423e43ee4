"""The README's own-data recipe, as printed, on a dataset the pipeline does not ship: a CSV
under data/external/, the params entries, `check-params`, `propose-suite`, then `dvc repro` to
a registered champion. A bad value on the way stops the run with one clear message and no
traceback."""

from __future__ import annotations

import re
import sys

import pytest
import yaml

from tests.projects import commit_all, copy_project, sh

pytestmark = pytest.mark.e2e

# The entries exactly as the README's table prints them for a tabular dataset.
DATASET = {"modality": "tabular", "source": "data/external/wine.csv", "label": "target"}
ENTRY = {
    "problem": "wine",
    "dataset": "wine",
    "family": "dnn",
    "model": {},
    "train": {},
    "gate": {},
}


def _readme_entries(repo_root) -> tuple[dict, dict]:
    readme = (repo_root / "README.md").read_text()
    row = next(line for line in readme.splitlines() if line.startswith("| tabular |"))
    datasets, models = re.findall(r"`(datasets: .*?|models: .*?)`", row)
    return yaml.safe_load(datasets)["datasets"], yaml.safe_load(models)["models"]


def test_the_readme_recipe_takes_a_new_dataset_to_a_champion(tmp_path, repo_root):
    from sklearn.datasets import load_wine

    datasets, models = _readme_entries(repo_root)
    dataset, entry = next(iter(datasets.values())), next(iter(models.values()))
    # The README's example names (patients, patients-dnn) with this test's file and label.
    assert set(dataset) == set(DATASET) and set(entry) == set(ENTRY), (dataset, entry)

    root = tmp_path / "project"
    root.mkdir()
    env = copy_project(repo_root, root)
    wine = load_wine(as_frame=True).frame
    (root / "data/external").mkdir(parents=True, exist_ok=True)
    wine.to_csv(root / "data/external/wine.csv", index=False)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["datasets"]["wine"] = DATASET
    params["models"]["wine-dnn"] = ENTRY
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    cli = [sys.executable, "-m", "pipelines.cli"]
    assert "wine-dnn" in sh([*cli, "check-params"], root, env).stdout
    sh([*cli, "propose-suite", "wine", "--out", "gx/expectations/wine.json"], root, env)
    commit_all(root, env)

    # A string in a numeric column: validation stops the run, once, without a traceback.
    bad = wine.astype({"alcohol": object})
    bad.loc[7, "alcohol"] = "n/a (broken probe)"
    bad.to_csv(root / "data/external/wine.csv", index=False)
    proc = sh(["dvc", "repro", "register@wine-dnn"], root, env, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "Traceback" not in out, out[-4000:]
    errors = [line for line in out.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "wine.parquet failed" in errors[0], out[-4000:]
    assert out.count("expect_column_values_to_be_of_type column 'alcohol'") == 1, out[-4000:]
    assert "n/a (broken probe)" in out and "Data Docs:" in out
    assert "Retry" not in out

    # The trusted file again: the same recipe ends with a champion.
    wine.to_csv(root / "data/external/wine.csv", index=False)
    sh(["dvc", "repro", "register@wine-dnn"], root, env)
    registration = yaml.safe_load((root / "models/wine-dnn/registration.json").read_text())
    assert registration["promoted"] and registration["version"] == "1", registration
    sh([*cli, "prefect-server", "stop"], root, env, check=False)
