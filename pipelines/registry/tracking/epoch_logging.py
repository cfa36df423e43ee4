"""The Keras callback that logs each epoch to the open run, so curves grow in the UI as a
model trains."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from pipelines.registry.tracking.connection import connect


def epoch_logger(run_id: str, every_s: float = 1.0) -> Any:
    """A Keras callback that logs each epoch's finite metrics to run `run_id` as it trains
    (step = epoch, from 1), written at most every `every_s` seconds and at the end, so the
    curves grow in the MLflow UI while the model trains."""
    import keras
    from mlflow.entities import Metric

    client = connect().MlflowClient()

    class EpochLogger(keras.callbacks.Callback):  # type: ignore[misc]  # keras ships no types
        def __init__(self) -> None:
            super().__init__()
            self.pending: list[Metric] = []
            self.flushed = time.monotonic()

        def flush(self) -> None:
            for start in range(0, len(self.pending), 900):
                client.log_batch(run_id, metrics=self.pending[start : start + 900])
            self.pending, self.flushed = [], time.monotonic()

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            now = int(time.time() * 1000)
            self.pending += [
                Metric(key=key, value=float(value), timestamp=now, step=epoch + 1)
                for key, value in (logs or {}).items()
                if np.isfinite(float(value))
            ]
            if time.monotonic() - self.flushed >= every_s:
                self.flush()

        def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
            self.flush()

    return EpochLogger()
