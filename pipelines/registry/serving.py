"""Using registered versions: re-verify one, score a file with one, serve one over HTTP."""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipelines.environment import env_with_venv, executable
from pipelines.errors import DataError
from pipelines.registry.lineage import dvc_lock_hashes
from pipelines.registry.promotion import (
    GOLDEN_INPUTS_FILE,
    GOLDEN_PREDICTIONS_FILE,
    fresh_process_parity,
)
from pipelines.registry.tracking import connection, model_versions, run_logging


def parse_ref(ref: str) -> tuple[str, str]:
    """`NAME@ALIAS` or `NAME/VERSION` -> (name, alias or version)."""
    for sep in ("@", "/"):
        if sep in ref:
            name, _, which = ref.partition(sep)
            if name and which:
                return name, which
    raise ValueError(f"expected NAME@ALIAS or NAME/VERSION, got {ref!r}")


def model_uri(ref: str) -> str:
    """`NAME@ALIAS` -> `models:/NAME@ALIAS`; `NAME/VERSION` -> `models:/NAME/VERSION`."""
    name, which = parse_ref(ref)
    return f"models:/{name}/{which}" if which.isdigit() else f"models:/{name}@{which}"


def verify_version(
    ref: str, lock_path: Path, tolerance: float = 1e-6
) -> tuple[list[str], list[str]]:
    """Re-check a registered version: its artifacts load, its training data is still what
    `dvc.lock` records, and it still reproduces its golden sample. Returns (ok, problems)."""
    name, which = parse_ref(ref)
    info = model_versions.version_info(name, which)
    ok: list[str] = [f"{name} version {info.version} (run {info.run_id}, aliases {info.aliases})"]
    problems: list[str] = []
    store_error = connection.store_error()
    with tempfile.TemporaryDirectory() as tmp:
        try:
            golden = run_logging.download_run_artifacts(
                info.run_id, run_logging.GOLDEN_DIR, Path(tmp)
            )
            inputs = np.load(golden / GOLDEN_INPUTS_FILE)
            np.load(golden / GOLDEN_PREDICTIONS_FILE)  # both halves must be there
            ok.append(f"golden sample present ({len(inputs)} raw inputs)")
        except (store_error, OSError, ValueError) as err:  # missing, or not an array
            problems.append(f"golden sample missing from run {info.run_id}: {err}")
        else:
            # The same fresh-process check that gated the version's promotion.
            check = fresh_process_parity(
                f"models:/{name}/{info.version}",
                golden / GOLDEN_INPUTS_FILE,
                golden / GOLDEN_PREDICTIONS_FILE,
                tolerance,
            )
            (ok if check.passed else problems).append(f"golden-sample parity: {check.detail}")
    dataset, trained = info.tags.get("dataset"), info.tags.get("data_md5")
    current = dvc_lock_hashes(lock_path, [f"ingest@{dataset}"])
    if not current:
        problems.append(f"cannot check the data: no ingest@{dataset} entry in {lock_path}")
    elif trained in current.values():
        ok.append(f"training data {trained} matches {lock_path}")
    else:
        problems.append(
            f"the data has moved on: version trained on data MD5 {trained}, "
            f"{lock_path} now records {', '.join(current.values())}"
        )
    return ok, problems


def _input_frames(
    path: Path, columns: list[str], chunk_rows: int
) -> tuple[int | None, Iterator[pd.DataFrame]]:
    """(rows if known, frames of at most `chunk_rows` rows of `columns`) from a raw CSV or
    Parquet file, read a record batch at a time; a `DataError` names missing columns."""
    import pyarrow.parquet as pq

    from pipelines.data.streaming import read_errors

    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            parquet = pq.ParquetFile(path)
            present, rows = parquet.schema_arrow.names, parquet.metadata.num_rows
        elif suffix == ".csv":
            present, rows = list(pd.read_csv(path, nrows=0).columns), None
        else:
            raise DataError(f"{path}: unsupported file type {suffix!r} (use .csv or .parquet)")
    except (*read_errors(), pd.errors.ParserError) as err:
        raise DataError(f"{path}: cannot be read as {suffix[1:]}: {err}") from err
    missing = [c for c in columns if c not in present]
    if missing:
        raise DataError(
            f"{path}: missing {len(missing)} feature column(s) the model needs, e.g. {missing[:5]}"
        )

    def frames() -> Iterator[pd.DataFrame]:
        try:
            if rows is not None:
                for batch in parquet.iter_batches(batch_size=chunk_rows, columns=columns):
                    yield batch.to_pandas()
            else:
                yield from pd.read_csv(path, usecols=columns, chunksize=chunk_rows)
        except (*read_errors(), pd.errors.ParserError) as err:
            raise DataError(f"{path}: cannot be read as {suffix[1:]}: {err}") from err

    return rows, frames()


def score_file(ref: str, input_path: Path, chunk_rows: int = 10_000) -> Path:
    """Score a raw CSV/Parquet file with a registered model; write `<input>.predictions.parquet`
    beside it. The file needs the model's feature columns (see its metadata). It is read and
    written a record batch of `chunk_rows` at a time, so memory stays flat at any size."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from tqdm import tqdm

    uri = model_uri(ref)
    model = model_versions.load_pyfunc(uri)
    meta = model.metadata.metadata
    total, frames = _input_frames(Path(input_path), list(meta["features"]), chunk_rows)
    path = input_path.with_name(f"{input_path.stem}.predictions.parquet")
    tmp = path.with_name(f".{path.name}.tmp")
    writer, scored = None, 0
    store_error = connection.store_error()
    try:
        with tqdm(total=total, unit="rows", desc=f"scoring with {uri}", file=sys.stderr) as bar:
            for frame in frames:
                # The rows go in as a table, as a request to `serve` does: the model's own
                # request checks refuse a missing document or a NaN with the same message.
                try:
                    answers = np.asarray(model.predict(frame[list(meta["features"])]))
                except store_error as err:
                    where = f" (rows counted from row {scored} of the file)" if scored else ""
                    message = getattr(err, "message", str(err))
                    raise DataError(f"{input_path}: {message}{where}") from None
                table = pa.Table.from_pandas(
                    _answers(answers, meta["classes"]), preserve_index=False
                )
                if writer is None:
                    writer = pq.ParquetWriter(tmp, table.schema)
                writer.write_table(table)
                scored += len(frame)
                bar.update(len(frame))
        if writer is None or scored == 0:
            raise DataError(f"{input_path}: no rows to score")
        writer.close()
        tmp.replace(path)
    finally:
        if writer is not None:
            writer.close()
        tmp.unlink(missing_ok=True)
    return path


def _answers(predictions: np.ndarray, classes: list[Any] | None) -> pd.DataFrame:
    if classes:
        out = pd.DataFrame(predictions, columns=[f"probability_{c}" for c in classes])
        out.insert(0, "predicted", np.asarray(classes)[predictions.argmax(axis=1)])
        return out
    return pd.DataFrame({"prediction": predictions.ravel()})


def serve_command(ref: str, host: str, port: int) -> tuple[list[str], dict[str, str]]:
    """The `mlflow models serve` command line and environment for a registered model."""
    uri = model_uri(ref)
    # the server starts uvicorn through the shell: it must find this environment's bin
    env = {**env_with_venv(), "MLFLOW_TRACKING_URI": connection.tracking_uri()}
    command = [
        executable("mlflow"),
        "models",
        "serve",
        "-m",
        uri,
        "--env-manager",
        "local",
        "-h",
        host,
        "-p",
        str(port),
    ]
    return command, env
