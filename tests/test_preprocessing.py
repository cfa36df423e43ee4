"""Row-hash split (a row's split is a function of the row); normalization statistics come
from the training split only; a series is split in time."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from pipelines.data.preprocessing import SPEC_FILE, Preprocessing, load_split, split_and_fit
from pipelines.data.row_hashing import assign_splits, row_hashes
from pipelines.data.series import fill_gaps
from pipelines.data.splitting import SPLITS, splits_under
from pipelines.dataset_config import DatasetConfig
from pipelines.errors import ConfigError, DataError

LOOSE = {"validation": 0.15, "test": 0.2}


def _tabular(raw, **split) -> DatasetConfig:
    return DatasetConfig(modality="tabular", source=str(raw), split={**LOOSE, **split})


def _split(df: pd.DataFrame, folder, seed: int = 42, **split):
    """split_and_fit on `df` as a raw file: (prep, {split name: table})."""
    folder.mkdir(parents=True, exist_ok=True)
    raw = folder / "raw.parquet"
    df.to_parquet(raw, index=False)
    prep = split_and_fit("bc", raw, _tabular(raw, **split), seed, folder / "out")
    return prep, {p: pd.read_parquet(folder / "out" / f"{p}.parquet") for p in SPLITS}


def _split_of_rows(parts: dict[str, pd.DataFrame], features: list[str]) -> dict[tuple, str]:
    """Each row, identified by its feature values, and its split."""
    return {
        tuple(row): part
        for part, table in parts.items()
        for row in table[features].itertuples(index=False)
    }


def test_row_hash_is_pinned_and_canonical():
    df = pd.DataFrame({"a": [1, 0, 2], "b": [0.5, -0.0, np.nan], "t": ["x y", " x  y ", "z"]})
    # Pinned: a change here moves rows between the splits of every dataset.
    assert row_hashes(df, "seed-42", ["a", "b"]).tolist() == [
        3910170094688096229,
        5871742657667785808,
        5805063262784092065,
    ]
    same = pd.DataFrame({"b": [0.5, 0.0, float("nan")], "a": [1.0, 0.0, 2.0]})  # floats, reordered
    np.testing.assert_array_equal(
        row_hashes(same, "seed-42", ["b", "a"]), row_hashes(df, "seed-42", ["a", "b"])
    )
    texts = row_hashes(df, "seed-42", ["t"], text=True)
    assert texts[0] == texts[1] != texts[2]
    assert not np.array_equal(
        row_hashes(df, "seed-7", ["a", "b"]), row_hashes(df, "seed-42", ["a", "b"])
    )
    with pytest.raises(DataError, match=r"split key column 'k': 1 row\(s\) have no key"):
        row_hashes(pd.DataFrame({"k": ["p1", None]}), "seed-42", key="k")


def test_thresholds_are_fixed_shares_of_the_hash_range():
    test_end, validation_end = int(0.2 * 2**64), int((0.2 + 0.15) * 2**64)
    edges = [0, test_end - 1, test_end, validation_end - 1, validation_end, 2**64 - 1]
    parts = assign_splits(np.array(edges, dtype=np.uint64), 0.15, 0.2)
    assert parts.tolist() == ["test", "test", "validation", "validation", "train", "train"]
    many = np.random.default_rng(0).integers(0, 2**64, 100_000, dtype=np.uint64)
    parts = assign_splits(many, 0.15, 0.2)
    assert abs((parts == "test").mean() - 0.2) < 0.005
    assert abs((parts == "validation").mean() - 0.15) < 0.005


def test_split_identity_is_recorded_and_reproduced(breast_cancer, tmp_path):
    prep, parts = _split(breast_cancer, tmp_path / "a")
    assert {p: len(t) for p, t in parts.items()} == {"train": 353, "validation": 93, "test": 123}
    identity = prep.split
    assert identity["method"] == "row-hash-v1" and identity["salt"] == "seed-42"
    assert identity["key"] is None and (identity["validation"], identity["test"]) == (0.15, 0.2)
    for part, table in parts.items():
        hashes = row_hashes(table, "seed-42", prep.features)
        digest = hashlib.md5(np.sort(hashes).astype("<u8").tobytes()).hexdigest()
        assert identity["digests"][part] == digest
    again, _ = _split(breast_cancer, tmp_path / "b")
    assert again.split == identity
    other, _ = _split(breast_cancer, tmp_path / "c", seed=7)
    assert other.split["salt"] == "seed-7" and other.split["digests"] != identity["digests"]
    named, _ = _split(breast_cancer, tmp_path / "d", seed=7, salt="seed-42")
    assert named.split == identity  # an explicit salt wins over the seed


def test_rows_keep_their_split_as_data_grows_or_is_reordered(breast_cancer, tmp_path):
    from pipelines.data.row_hashing import share_allowance

    order = np.random.default_rng(0).permutation(len(breast_cancer))
    first = breast_cancer.iloc[np.sort(order[: int(0.8 * len(breast_cancer))])]
    prep, old_parts = _split(first, tmp_path / "old")
    old = _split_of_rows(old_parts, prep.features)
    shuffled = breast_cancer.sample(frac=1.0, random_state=3)
    for name, grown in (("grown", breast_cancer), ("shuffled", shuffled)):
        _, parts = _split(grown, tmp_path / name)
        new = _split_of_rows(parts, prep.features)
        old_test = [row for row, part in old.items() if part == "test"]
        assert all(new[row] == "test" for row in old_test), name  # fixed thresholds: 100%
        assert all(new[row] != "test" for row, part in old.items() if part != "test"), name
        assert all(new[row] == part for row, part in old.items()), name
        both = pd.concat(parts, names=["split"])
        counts = pd.crosstab(both["target"], both.index.get_level_values("split"))
        shares = counts.div(counts.sum(axis=1), axis=0)
        for part, share in (("train", 0.65), ("validation", 0.15), ("test", 0.2)):
            for cls, value in shares[part].items():
                allowed = share_allowance(0.05, share, int(counts.loc[cls].sum()))
                assert abs(value - share) <= allowed, (name, part, cls)


def test_splits_under_an_identity(breast_cancer, tmp_path):
    prep, parts = _split(breast_cancer, tmp_path / "a")
    for part, table in parts.items():
        assert (splits_under(prep.split, table, prep) == part).all()
    table = pd.concat(parts.values(), ignore_index=True)
    own = splits_under(prep.split, table, prep)
    other = splits_under({**prep.split, "salt": "another"}, table, prep)
    assert (own != other).mean() > 0.3
    with pytest.raises(ValueError, match="empty split identity"):
        splits_under({}, table, prep)
    with pytest.raises(ValueError, match=r"unknown split method 'random'"):
        splits_under({**prep.split, "method": "random"}, table, prep)
    with pytest.raises(ValueError, match=r"feature column\(s\) \['mean_radius'\] not in"):
        splits_under(prep.split, table.drop(columns="mean_radius"), prep)


def test_a_named_key_decides_the_split_and_is_kept(breast_cancer, tmp_path):
    df = breast_cancer.assign(patient=[f"p{i // 3}" for i in range(len(breast_cancer))])
    prep, parts = _split(df, tmp_path / "a", key="patient")
    assert "patient" not in prep.features and len(prep.features) == 30
    assert prep.split["key"] == "patient" and prep.input_shape == [30]
    assert all("patient" in table.columns for table in parts.values())
    # Every patient's rows share one split, whatever their features.
    patients = {part: set(table["patient"]) for part, table in parts.items()}
    assert (
        not patients["train"] & patients["test"] and not patients["train"] & patients["validation"]
    )
    assert not patients["validation"] & patients["test"]
    x, _ = load_split(tmp_path / "a" / "out", "test", prep)
    assert x.shape == (len(parts["test"]), 30)
    # Same key, other features: the same split.
    test = parts["test"]
    scrambled = test.assign(
        **{f: test[f].sample(frac=1, random_state=1).to_numpy() for f in prep.features}
    )
    assert (splits_under(prep.split, scrambled, prep) == "test").all()
    with pytest.raises(ValueError, match=r"key column \['patient'\] not in the table"):
        splits_under(prep.split, test.drop(columns="patient"), prep)
    # The key is no drift feature: it identifies rows.
    reference = json.loads((tmp_path / "a" / "out" / "reference.json").read_text())
    assert "patient" not in reference["features"] and "mean_radius" in reference["features"]


def test_a_key_must_be_a_column_and_not_the_label(breast_cancer, tmp_path):
    raw = tmp_path / "raw.parquet"
    breast_cancer.to_parquet(raw, index=False)
    with pytest.raises(ConfigError, match=r"datasets\.bc\.split\.key: column 'patient' not in"):
        split_and_fit("bc", raw, _tabular(raw, key="patient"), 42, tmp_path / "out")
    with pytest.raises(ConfigError, match=r"datasets\.bc\.split\.key: 'target' is the label"):
        split_and_fit("bc", raw, _tabular(raw, key="target"), 42, tmp_path / "out")


def test_a_class_off_by_more_than_the_tolerance_is_a_data_error(breast_cancer, tmp_path):
    """A key column that follows the class puts each class in one split: named, with the
    allowance. Chance alone stays inside it: class 0 (212 rows) has 0.599 of its rows in train
    against 0.65, within 3 standard errors (0.098), so the default split passes."""
    from pipelines.data.row_hashing import share_allowance

    raw = tmp_path / "raw.parquet"
    breast_cancer.assign(patient=breast_cancer["target"].map({0: "a", 1: "b"})).to_parquet(raw)
    with pytest.raises(DataError) as err:
        split_and_fit("bc", raw, _tabular(raw, key="patient"), 42, tmp_path / "out")
    message = str(err.value)
    assert "datasets.bc" in message and "of its 212 rows in" in message
    assert "configured 0.650 (allowed: +-0.098)" in message and "split.salt" in message
    assert "split.tolerance" in message and not (tmp_path / "out").exists()
    assert share_allowance(0.05, 0.65, 212) == pytest.approx(3 * (0.65 * 0.35 / 212) ** 0.5)
    assert share_allowance(0.05, 0.2, 100_000) == 0.05  # large classes: the stated tolerance
    breast_cancer.to_parquet(raw)
    split_and_fit("bc", raw, _tabular(raw), 42, tmp_path / "ok")


def test_split_and_fit_uses_train_statistics_only(breast_cancer, tmp_path, capsys):
    prep, parts = _split(breast_cancer, tmp_path)
    out = tmp_path / "out"
    assert prep == Preprocessing.load(out / SPEC_FILE)
    assert prep.classes == [0, 1] and prep.input_shape == [30]
    train = parts["train"]
    np.testing.assert_allclose(prep.stats["mean"], train[prep.features].mean(), rtol=1e-5)
    np.testing.assert_allclose(prep.stats["variance"], train[prep.features].var(ddof=0), rtol=1e-4)
    full_mean = breast_cancer[prep.features].mean().to_numpy()
    assert not np.allclose(prep.stats["mean"], full_mean, rtol=1e-6)
    x, y = load_split(out, "test", prep)
    assert x.shape == (123, 30) and x.dtype == np.float64 and set(y) == {0, 1}
    printed = capsys.readouterr().out
    assert "split method row-hash-v1: salt 'seed-42'" in printed
    assert "{'train': 353, 'validation': 93, 'test': 123}" in printed


def test_an_older_preprocessing_file_loads_without_a_split(breast_cancer, tmp_path):
    _split(breast_cancer, tmp_path)
    data = json.loads((tmp_path / "out" / SPEC_FILE).read_text())
    del data["split"]
    (tmp_path / "old.json").write_text(json.dumps(data))
    assert Preprocessing.load(tmp_path / "old.json").split == {}


def test_missing_label_column_is_named(breast_cancer, tmp_path):
    raw = tmp_path / "raw.parquet"
    breast_cancer.drop(columns=["target"]).to_parquet(raw, index=False)
    with pytest.raises(ConfigError, match=r"datasets\.bc\.label: column 'target'"):
        split_and_fit(
            "bc", raw, DatasetConfig(modality="tabular", source=str(raw)), 42, tmp_path / "out"
        )


def _series(values, start="2000-01-01", freq="7D"):
    return pd.DataFrame(
        {"date": pd.date_range(start, periods=len(values), freq=freq), "co2": values}
    )


def test_gaps_within_the_policy_are_interpolated():
    df = _series([1.0, np.nan, np.nan, 4.0, 5.0, np.nan])
    filled = fill_gaps(df, "date", "co2", max_gap=2)
    assert filled["co2"].tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]  # trailing gap dropped


def test_a_gap_wider_than_the_policy_is_named():
    df = _series([1.0, np.nan, np.nan, np.nan, 5.0])
    with pytest.raises(DataError, match=r"gap of 3 missing steps from 2000-01-08.*at most 2"):
        fill_gaps(df, "date", "co2", max_gap=2)


def test_irregular_and_unordered_time_index_are_rejected():
    df = _series([1.0, 2.0, 3.0, 4.0])
    irregular = df.drop(index=2).reset_index(drop=True)
    with pytest.raises(DataError, match=r"time_index_regular.*first at 2000-01-22"):
        fill_gaps(irregular, "date", "co2", max_gap=2)
    swapped = df.iloc[[0, 2, 1, 3]].reset_index(drop=True)
    with pytest.raises(DataError, match="time_index_strictly_increasing"):
        fill_gaps(swapped, "date", "co2", max_gap=2)


def test_series_split_is_temporal_with_raw_windows(tmp_path):
    from pipelines.data.datasets import load_source

    raw = tmp_path / "co2.parquet"
    load_source("statsmodels:co2").to_parquet(raw, index=False)
    cfg = DatasetConfig(
        modality="sequence",
        source=str(raw),
        label="co2",
        split={"validation": 0.1, "test": 0.2},
        series={"time_column": "date", "window": 52, "max_gap": 20},
    )
    prep = split_and_fit("co2", raw, cfg, 0, tmp_path / "out")
    train, val, test = (
        pd.read_parquet(tmp_path / "out" / f"{p}.parquet") for p in ("train", "validation", "test")
    )
    assert len(test) == 457 and len(train) + len(val) + len(test) == 2284 - 52
    assert train["date"].max() < val["date"].min() <= val["date"].max() < test["date"].min()
    # Each row's window is the 52 raw values just before its target, oldest first.
    row = test.iloc[10]
    previous = test.iloc[9]
    assert row["t-1"] == previous["co2"] and row["t-2"] == previous["t-1"]
    assert prep.input_shape == [52, 1] and prep.task_type == "regression"
    x, y = load_split(tmp_path / "out", "test", prep)
    assert x.shape == (457, 52, 1) and y.shape == (457,)
    assert prep.stats["step_scale"] > 0
    identity = prep.split
    assert identity["method"] == "temporal" and identity["test"] == 0.2
    assert identity["test_start"] == str(test["date"].iloc[0])
    assert identity["validation_start"] == str(val["date"].iloc[0])
    times = "\n".join(str(t) for t in test["date"].tolist())
    assert identity["digests"]["test"] == hashlib.md5(times.encode()).hexdigest()
    assert (splits_under(identity, test, prep) == "test").all()
    assert (splits_under(identity, val, prep) == "validation").all()
    assert (splits_under(identity, train, prep) == "train").all()
    with pytest.raises(ValueError, match=r"time column 'date' not in the table"):
        splits_under(identity, test.drop(columns="date"), prep)


def test_image_preprocessing_scale_comes_from_training_pixels(tmp_path):
    from pipelines.data.datasets import load_source

    raw = tmp_path / "digits.parquet"
    load_source("sklearn:digits").to_parquet(raw, index=False)
    # With the default salt, digit 8 has 0.230 of its 174 rows in validation against 0.15:
    # within 3 standard errors (0.081).
    cfg = DatasetConfig(modality="images", source=str(raw))
    prep = split_and_fit("digits", raw, cfg, 42, tmp_path / "out")
    assert prep.input_shape == [8, 8] and prep.classes == list(range(10))
    assert prep.stats["scale"] == pytest.approx(1 / 16)
    x, y = load_split(tmp_path / "out", "test", prep)
    assert x.shape == (347, 8, 8) and x.max() == 16.0 and set(y) == set(range(10))
    assert prep.split["method"] == "row-hash-v1" and sorted(prep.split["digests"]) == sorted(SPLITS)


def test_no_text_is_in_two_splits_and_duplicates_are_dropped_and_counted(tmp_path, raw_params):
    from pipelines.config import parse_config
    from pipelines.data.datasets import ingest
    from pipelines.data.preprocessing import split_and_fit

    cfg = parse_config(raw_params)
    raw = ingest("bbc_news", cfg.dataset("bbc_news"), tmp_path / "raw.parquet")
    prep = split_and_fit("bbc_news", raw, cfg.dataset("bbc_news"), 42, tmp_path / "data")
    parts = {p: pd.read_parquet(tmp_path / "data" / f"{p}.parquet") for p in SPLITS}
    assert prep.stats["duplicates_dropped"] == 98
    assert prep.split["salt"] == "seed-42"  # shipped params: within the default tolerance
    assert {p: len(part) for p, part in parts.items()} == {
        "train": 1384,
        "validation": 319,
        "test": 424,
    }
    assert sum(len(part) for part in parts.values()) == 2225 - 98
    texts = {p: set(part["text"].str.strip()) for p, part in parts.items()}
    assert not texts["train"] & texts["test"] and not texts["train"] & texts["validation"]
    assert not texts["validation"] & texts["test"]
    assert prep.modality == "text" and prep.input_shape == [] and prep.features == ["text"]
    assert len(prep.classes) == 5


def test_text_split_ignores_surrounding_and_inner_white_space(tmp_path):
    words = [f"story {i} about {topic}" for i in range(300) for topic in ("markets", "football")]
    labels = ["business", "sport"] * 300
    df = pd.DataFrame({"text": words, "category": labels})
    raw = tmp_path / "raw.parquet"
    df.to_parquet(raw, index=False)
    cfg = DatasetConfig(modality="text", source=str(raw), label="category", split=LOOSE)
    prep = split_and_fit("news", raw, cfg, 42, tmp_path / "a")
    parts = {p: pd.read_parquet(tmp_path / "a" / f"{p}.parquet") for p in SPLITS}
    spaced = pd.DataFrame(
        {"text": ["  " + t.replace(" ", " \n\t ") + "\n" for t in words], "category": labels}
    )
    spaced.to_parquet(raw, index=False)
    prep_spaced = split_and_fit("news", raw, cfg, 42, tmp_path / "b")
    assert prep_spaced.split == prep.split  # the same texts, so the same digests
    for part, table in parts.items():
        assert (splits_under(prep.split, table, prep) == part).all()
        moved = table.assign(text="\t" + table["text"] + "  ")
        assert (splits_under(prep.split, moved, prep) == part).all()
