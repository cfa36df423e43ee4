"""A tabular dataset kept as Parquet shards (`shards:` in params) goes through every stage
without being read whole: real breast-cancer rows, resampled with noise into shards."""

from __future__ import annotations

import copy
import hashlib
import json

import numpy as np
import pandas as pd
import pytest
import yaml

from pipelines.config import parse_config
from pipelines.data.streaming import (
    iter_frames,
    read_shard,
    row_count,
    shard_dataset,
    shard_paths,
    synthesize_shards,
)
from pipelines.errors import ConfigError, DataError

NAME = "cancer_big"
TASK = "tabular-big"
SHARD_ROWS = 1000


def sharded_params(raw_params: dict, source: str, max_epochs: int = 3) -> dict:
    """The shipped params with one sharded dataset and one DNN trained on it."""
    params = copy.deepcopy(raw_params)
    params["datasets"] = {
        NAME: {
            "modality": "tabular",
            "source": source,
            "label": "target",
            "split": {"validation": 0.15, "test": 0.2},
            "shards": {"rows": SHARD_ROWS},
        }
    }
    task = params["models"]["tabular-dnn"]
    task["dataset"] = NAME
    task["train"].update(batch_size=64, max_epochs=max_epochs, patience=2)
    params["models"] = {TASK: task}
    params["search"] = {}
    return params


@pytest.fixture(scope="module")
def source(tmp_path_factory, _breast_cancer):
    """3 source shards of 700 rows: 2,100 rows, re-sharded by 1,000 on ingest."""
    folder = tmp_path_factory.mktemp("external") / NAME
    synthesize_shards(_breast_cancer, "target", folder, 3, 700, noise=0.01)
    return folder


@pytest.fixture
def cfg(raw_params, source):
    return parse_config(sharded_params(raw_params, str(source)))


def _read_all(folder) -> pd.DataFrame:
    return pd.concat([read_shard(s) for s in shard_paths(folder)], ignore_index=True)


def _sorted_rows(df: pd.DataFrame) -> np.ndarray:
    values = df.to_numpy("float64")
    return values[np.lexsort(values.T[::-1])]


@pytest.fixture
def no_whole_reads(monkeypatch):
    """Reading a shard folder whole with pandas fails the test."""
    original = pd.read_parquet

    def guarded(path, *args, **kwargs):
        from pathlib import Path

        assert not Path(path).is_dir(), f"{path} was read whole"
        return original(path, *args, **kwargs)

    monkeypatch.setattr(pd, "read_parquet", guarded)


def test_shards_are_for_tabular_datasets_and_name_the_key(raw_params, source):
    params = sharded_params(raw_params, str(source))
    params["datasets"]["digits"] = {
        **raw_params["datasets"]["digits"],
        "shards": {"rows": 5000},
    }
    with pytest.raises(ConfigError, match=r"datasets\.digits.*shards: only for tabular"):
        parse_config(params)
    params = sharded_params(raw_params, str(source))
    params["datasets"][NAME]["shards"]["rows"] = 10
    with pytest.raises(ConfigError, match=r"datasets\.cancer_big\.shards\.rows"):
        parse_config(params)


def test_ingest_copies_every_row_into_shards_of_the_configured_size(
    cfg, source, tmp_path, no_whole_reads
):
    from pipelines.data.datasets import ingest

    out = tmp_path / "raw" / f"{NAME}.parquet"
    ingest(NAME, cfg.dataset(NAME), out)
    shards = shard_paths(out)
    assert [row_count([s]) for s in shards] == [1000, 1000, 100]
    pd.testing.assert_frame_equal(_read_all(out), _read_all(source))


def test_ingest_names_a_damaged_shard_and_leaves_nothing(cfg, source, tmp_path):
    from pipelines.data.datasets import ingest

    damaged = tmp_path / "damaged"
    damaged.mkdir()
    for shard in shard_paths(source):
        (damaged / shard.name).write_bytes(shard.read_bytes())
    broken = damaged / "part-01.parquet"
    broken.write_bytes(broken.read_bytes()[:-500])
    dataset = cfg.dataset(NAME).model_copy(update={"source": str(damaged)})
    out = tmp_path / "raw" / f"{NAME}.parquet"
    with pytest.raises(DataError, match=r"part-01\.parquet: cannot be read as Parquet"):
        ingest(NAME, dataset, out)
    assert not out.exists() and not list(out.parent.glob(".*tmp"))


def test_shards_with_other_columns_are_refused(source, tmp_path):
    odd = tmp_path / "odd"
    odd.mkdir()
    first = read_shard(shard_paths(source)[0])
    first.to_parquet(odd / "part-0.parquet", index=False)
    first.drop(columns=["mean_area"]).to_parquet(odd / "part-1.parquet", index=False)
    with pytest.raises(DataError, match=r"part-1\.parquet: missing column\(s\) \['mean_area'\]"):
        list(iter_frames(shard_paths(odd)))


@pytest.fixture
def raw_shards(cfg, tmp_path):
    from pipelines.data.datasets import ingest

    return ingest(NAME, cfg.dataset(NAME), tmp_path / "raw" / f"{NAME}.parquet")


def test_split_streams_a_row_hash_partition_with_train_only_statistics(
    cfg, raw_shards, tmp_path, no_whole_reads
):
    from pipelines.data.preprocessing import (
        SPEC_FILE,
        Preprocessing,
        fit_normalization,
        split_and_fit,
    )
    from pipelines.data.row_hashing import row_hashes
    from pipelines.data.splitting import splits_under

    prep = split_and_fit(NAME, raw_shards, cfg.dataset(NAME), 42, tmp_path / "a")
    parts = {p: _read_all(tmp_path / "a" / f"{p}.parquet") for p in ("train", "validation", "test")}
    assert prep.sharded and prep.rows == {p: len(df) for p, df in parts.items()}
    # Every row lands in exactly one part.
    np.testing.assert_array_equal(
        _sorted_rows(pd.concat(parts.values())), _sorted_rows(_read_all(raw_shards))
    )
    for part, share in (("validation", 0.15), ("test", 0.2)):
        assert abs(len(parts[part]) / 2100 - share) < 0.04, (part, len(parts[part]))
    # Train is scattered over ceil(2100 * 0.65 / 1000) shards.
    assert len(shard_paths(tmp_path / "a" / "train.parquet")) == 2
    features = [c for c in parts["train"].columns if c != "target"]
    whole = fit_normalization(parts["train"][features].to_numpy())
    np.testing.assert_allclose(prep.stats["mean"], whole["mean"], rtol=1e-12)
    np.testing.assert_allclose(prep.stats["variance"], whole["variance"], rtol=1e-10)
    assert prep.classes == [0, 1] and Preprocessing.load(tmp_path / "a" / SPEC_FILE) == prep
    reference = json.loads((tmp_path / "a" / "reference.json").read_text())
    assert set(reference["features"]) == set(features)
    # Each row's part is its row hash's, as for a table read whole; the identity records it.
    assert prep.split["method"] == "row-hash-v1" and prep.split["salt"] == "seed-42"
    for part, table in parts.items():
        assert (splits_under(prep.split, table, prep) == part).all(), part
        hashes = np.sort(row_hashes(table, "seed-42", prep.features)).astype("<u8")
        assert prep.split["digests"][part] == hashlib.md5(hashes.tobytes()).hexdigest()
    # Same seed, same split, shard for shard.
    split_and_fit(NAME, raw_shards, cfg.dataset(NAME), 42, tmp_path / "b")
    for part in parts:
        for a, b in zip(
            shard_paths(tmp_path / "a" / f"{part}.parquet"),
            shard_paths(tmp_path / "b" / f"{part}.parquet"),
            strict=True,
        ):
            pd.testing.assert_frame_equal(read_shard(a), read_shard(b))


def test_a_sharded_split_by_key_keeps_the_key_out_of_the_features(
    cfg, raw_shards, tmp_path, no_whole_reads
):
    from pipelines.data.preprocessing import split_and_fit

    keyed = tmp_path / "keyed"
    keyed.mkdir()
    for number, shard in enumerate(shard_paths(raw_shards)):
        frame = read_shard(shard)
        # One group per 7 rows, across shard boundaries.
        first = number * SHARD_ROWS
        frame.insert(0, "group", [f"g{(first + i) // 7}" for i in range(len(frame))])
        frame.to_parquet(keyed / shard.name, index=False)
    split = cfg.dataset(NAME).split.model_copy(update={"key": "group"})
    dataset = cfg.dataset(NAME).model_copy(update={"split": split})
    prep = split_and_fit(NAME, keyed, dataset, 42, tmp_path / "out")
    assert "group" not in prep.features and prep.input_shape == [30]
    assert prep.split["key"] == "group"
    groups = {p: set(_read_all(tmp_path / "out" / f"{p}.parquet")["group"]) for p in prep.rows}
    assert sum(map(len, groups.values())) == len(set.union(*groups.values())) == 300
    reference = json.loads((tmp_path / "out" / "reference.json").read_text())
    assert "group" not in reference["features"]
    with pytest.raises(ConfigError, match=r"datasets\.cancer_big\.split\.key: column 'id'"):
        split_and_fit(
            NAME,
            keyed,
            dataset.model_copy(update={"split": split.model_copy(update={"key": "id"})}),
            42,
            tmp_path / "nope",
        )


def test_training_stream_reshuffles_every_pass_and_repeats_with_the_seed(cfg, raw_shards, tmp_path):
    from pipelines.data.preprocessing import split_and_fit, split_shards_of

    prep = split_and_fit(NAME, raw_shards, cfg.dataset(NAME), 42, tmp_path / "data")
    shards = split_shards_of(tmp_path / "data", "train")

    def passes(seed: int, count: int) -> list[np.ndarray]:
        dataset = shard_dataset(shards, prep.features, prep.label, 64, shuffle_seed=seed)
        assert int(dataset.cardinality()) == -(-prep.rows["train"] // 64)
        return [np.concatenate([x.numpy() for x, _ in dataset]) for _ in range(count)]

    first, second = passes(7, 2)
    again, _ = passes(7, 2)
    train = _read_all(tmp_path / "data" / "train.parquet")[prep.features].to_numpy("float32")
    for rows in (first, second):
        np.testing.assert_array_equal(
            _sorted_rows(pd.DataFrame(rows)), _sorted_rows(pd.DataFrame(train))
        )
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(first, again)


def test_validate_runs_the_suite_per_shard_and_names_the_bad_one(
    cfg, raw_shards, tmp_path, monkeypatch, no_whole_reads
):
    from pipelines.data.suite_drafting import propose_from_shards
    from pipelines.data.validation import ValidationFailed, validate_shards

    shards = shard_paths(raw_shards)
    suite = propose_from_shards(shards, NAME, "target", "test")
    suite_path = tmp_path / "suite.json"
    suite_path.write_text(json.dumps(suite))
    report = validate_shards(shards, NAME, suite_path, tmp_path / "docs")
    assert report.success and report.evaluated > 3 * 60

    bad = read_shard(shards[1])
    bad.loc[[5, 9], "worst_texture"] = np.nan
    bad.to_parquet(shards[1], index=False)
    report = validate_shards(shards, NAME, suite_path, tmp_path / "docs")
    assert not report.success
    (failure,) = report.failures
    assert failure.column == "worst_texture" and failure.detail.startswith("part-00001.parquet:")
    assert "2 of 1000 values unexpected" in failure.detail

    # The stage: the same failure, exit through ValidationFailed, recorded in MLflow.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    from pipelines.orchestration.stages import validate_dataset

    with pytest.raises(ValidationFailed, match=r"part-00001\.parquet: 2 of 1000"):
        validate_dataset(cfg, NAME, raw_shards, suite_path, tmp_path / "docs")


def test_row_count_bounds_hold_for_the_whole_dataset(raw_shards, tmp_path):
    from pipelines.data.validation import validate_shards

    shards = shard_paths(raw_shards)
    suite = {
        "name": NAME,
        "expectations": [
            {
                "type": "expect_table_row_count_to_be_between",
                "kwargs": {"min_value": 2500, "max_value": 10_000},
            },
            {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "target"}},
        ],
    }
    suite_path = tmp_path / "suite.json"
    suite_path.write_text(json.dumps(suite))
    report = validate_shards(shards, NAME, suite_path, tmp_path / "docs")
    (failure,) = report.failures
    assert "observed 2100 rows in 3 shards" in failure.detail


@pytest.mark.e2e
def test_dvc_repro_trains_and_registers_a_sharded_dataset(tmp_path, repo_root, raw_params, source):
    """`dvc repro` with the repo's own dvc.yaml: every stage streams the shards; the champion
    serves raw rows like the pipeline predicted them."""
    from tests.projects import commit_all, copy_project, sh

    root = tmp_path / "project"
    env = copy_project(repo_root, root)
    external = root / "data" / "external" / NAME
    external.mkdir(parents=True)
    for shard in shard_paths(source):
        (external / shard.name).write_bytes(shard.read_bytes())
    params = sharded_params(raw_params, f"data/external/{NAME}", max_epochs=5)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh(["python", "-m", "pipelines.cli", "check-params"], root, env)  # creates its search folder
    sh(
        [
            "python",
            "-m",
            "pipelines.cli",
            "propose-suite",
            NAME,
            "--out",
            f"gx/expectations/{NAME}.json",
        ],
        root,
        env,
    )
    commit_all(root, env)
    env["PIPELINES_PREFECT"] = "off"
    out = sh(["dvc", "repro"], root, env)
    log = out.stdout + out.stderr
    assert "validating 3 shard(s)" in log and "(streamed from shards)" in log
    assert f"{TASK} version 1 is @champion" in log
    assert (root / "data" / "raw" / f"{NAME}.parquet").is_dir()

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    metrics = json.loads((root / "reports" / TASK / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] >= 0.95
    model = mlflow.pyfunc.load_model(f"models:/{TASK}@champion")
    test = _read_all(root / "data" / "processed" / NAME / "test.parquet")
    served = model.predict(test.drop(columns="target").to_numpy("float64"))
    predicted = np.load(root / "reports" / TASK / "test_predictions.npy")
    np.testing.assert_allclose(served, predicted, atol=1e-6)
    assert sh(["dvc", "status"], root, env).stdout.strip() == "Data and pipelines are up to date."

    # The version's data hash is the one dvc.lock records for the folder (DVC's `.dir` hash),
    # so `verify` passes; after the data changes (and ingest reruns), it fails.
    champion = mlflow.MlflowClient().get_model_version_by_alias(TASK, "champion")
    assert champion.tags["data_md5"].endswith(".dir")
    verify = ["python", "-m", "pipelines.cli", "verify", f"{TASK}@champion"]
    passed = sh(verify, root, env)
    assert "training data" in passed.stdout and "matches" in passed.stdout, passed.stdout
    first = sorted(external.iterdir())[0]
    first.rename(first.with_name("z-" + first.name))
    (external / first.name).write_bytes(sorted(external.iterdir())[-1].read_bytes())
    sh(["dvc", "repro", "--single-item", f"ingest@{NAME}"], root, env)
    moved = sh(verify, root, env, check=False)
    assert moved.returncode == 1 and "the data has moved on" in moved.stdout, moved.stdout


def test_synthesize_shards_writes_resampled_real_rows(tmp_path, _breast_cancer, capsys):
    from pipelines.cli import app

    app(
        ["synthesize-shards", "--out", str(tmp_path), "--shards", "2", "--rows-per-shard", "500"],
        standalone_mode=False,
    )
    assert "2 shard(s), 1,000 rows" in capsys.readouterr().out
    rows = _read_all(tmp_path)
    assert len(rows) == 1000 and list(rows.columns) == list(_breast_cancer.columns)
    assert set(rows["target"]) == {0, 1}
    # Each row is a real row times 1 + 1% noise: within 6% of it, feature by feature.
    features = [c for c in rows.columns if c != "target"]
    real = _breast_cancer[features].to_numpy()
    made = rows[features].to_numpy()[:, None, :]
    close = np.abs(made - real[None, :, :]) <= 0.06 * np.abs(real[None, :, :])
    assert close.all(axis=2).any(axis=1).all()
