"""Train one task's model with early stopping and write the model and its history."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.config import PipelineConfig
from pipelines.data.preprocessing import (
    SPEC_FILE,
    Preprocessing,
    encode_labels,
    load_split,
    split_shards_of,
)
from pipelines.errors import TrainingDiverged
from pipelines.model.builders import build_model

MODEL_FILE = "model.keras"
HISTORY_FILE = "history.csv"
SUMMARY_FILE = "training.json"


@dataclass(frozen=True)
class TrainingSummary:
    task: str
    family: str
    seed: int
    best_epoch: int
    stopped_epoch: int
    best_val_loss: float


def seed_everything(seed: int) -> None:
    """Same seed, same data, same params: same weights and metrics (on CPU)."""
    os.environ["PYTHONHASHSEED"] = str(seed)
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def distribution_strategy(name: str):
    """The `tf.distribute` strategy named in `train.distribute`: `none` is TensorFlow's default
    (one device); `mirrored` replicates the model on every GPU of this node (or the CPU)."""
    import tensorflow as tf

    if name == "mirrored":
        strategy = tf.distribute.MirroredStrategy()
        print(f"MirroredStrategy over {strategy.num_replicas_in_sync} replica(s)")
        return strategy
    return tf.distribute.get_strategy()


def _streamed(
    data_dir: Path,
    split: str,
    prep: Preprocessing,
    batch_rows: int = 65_536,
    seed: int | None = None,
):
    """A split of a sharded dataset as a `tf.data` pipeline of (raw features, targets)."""
    from pipelines.data.streaming import shard_dataset

    return shard_dataset(
        split_shards_of(data_dir, split),
        prep.features,
        prep.label,
        batch_rows,
        encode=lambda y: encode_labels(y, prep),
        shuffle_seed=seed,
    )


def _strings(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int | None = None):
    """Raw strings and targets as a `tf.data` pipeline, reshuffled every epoch when seeded."""
    import tensorflow as tf

    data = tf.data.Dataset.from_tensor_slices((tf.constant(x.tolist()), y))
    if seed is not None:
        data = data.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    return data.batch(batch_size)


def train_task(
    cfg: PipelineConfig,
    task: str,
    data_dir: Path,
    out_dir: Path,
    callbacks: Sequence[object] = (),
) -> TrainingSummary:
    """Build the task's model from params, fit it with early stopping on validation loss
    (best weights restored) and save model, per-epoch history and a summary to `out_dir`.
    `callbacks`: more Keras callbacks (the run wing passes one that logs each epoch)."""
    import keras

    task_cfg = cfg.entry(task)
    seed_everything(cfg.base.seed)
    prep = Preprocessing.load(data_dir / SPEC_FILE)
    train_cfg = task_cfg.train
    if prep.sharded:
        # Streamed from the shards: a new shard order and row order every epoch (seeded).
        train_data = _streamed(data_dir, "train", prep, train_cfg.batch_size, cfg.base.seed)
        fit_data = {
            "x": train_data,
            "validation_data": _streamed(data_dir, "validation", prep),
            "shuffle": False,  # the stream shuffles itself
        }
        train_rows, val_rows = prep.rows["train"], prep.rows["validation"]
    else:
        x_train, y_train = load_split(data_dir, "train", prep)
        x_val, y_val = load_split(data_dir, "validation", prep)
        if prep.modality == "text":
            # Keras takes strings as tensors, not NumPy arrays: a seeded, reshuffled tf.data.
            fit_data = {
                "x": _strings(x_train, y_train, train_cfg.batch_size, cfg.base.seed),
                "validation_data": _strings(x_val, y_val, train_cfg.batch_size),
                "shuffle": False,
            }
        else:
            fit_data = {
                "x": x_train,
                "y": y_train,
                "validation_data": (x_val, y_val),
                "batch_size": train_cfg.batch_size,
                "shuffle": True,
            }
        train_rows, val_rows = len(x_train), len(x_val)
    strategy = distribution_strategy(task_cfg.train.distribute)
    with strategy.scope():
        texts = None if prep.sharded or prep.modality != "text" else x_train
        model = build_model(task_cfg.family, cfg.model_params(task), prep, task_cfg.train, texts)
    callbacks = [
        keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=task_cfg.train.patience, restore_best_weights=True
        ),
        keras.callbacks.TerminateOnNaN(),
        *callbacks,
    ]
    print(
        f"training {task} ({task_cfg.family}) on {train_rows:,} rows, "
        f"validating on {val_rows:,}, up to {train_cfg.max_epochs} epochs"
        + (" (streamed from shards)" if prep.sharded else "")
    )
    history = model.fit(**fit_data, epochs=train_cfg.max_epochs, callbacks=callbacks, verbose=2)
    curves = pd.DataFrame(history.history)
    curves.insert(0, "epoch", range(1, len(curves) + 1))
    bad = curves[~np.isfinite(curves[["loss", "val_loss"]]).all(axis=1)]
    if len(bad) or len(curves) == 0:
        epoch = int(bad["epoch"].iloc[0]) if len(bad) else 1
        loss = bad["loss"].iloc[0] if len(bad) else float("nan")
        raise TrainingDiverged(
            f"{task}: loss became {loss} at epoch {epoch} "
            f"(learning_rate={task_cfg.train.learning_rate}); training stopped (TerminateOnNaN), "
            "nothing was saved or registered; its MLflow run ends FAILED",
            reason=f"loss became {loss} at epoch {epoch}",
            curves=curves,
        )
    best = int(curves["val_loss"].idxmin())
    summary = TrainingSummary(
        task=task,
        family=task_cfg.family,
        seed=cfg.base.seed,
        best_epoch=best + 1,
        stopped_epoch=len(curves),
        best_val_loss=float(curves["val_loss"].iloc[best]),
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".{MODEL_FILE}.tmp.keras"
    model.save(tmp)
    tmp.replace(out_dir / MODEL_FILE)
    curves.to_csv(out_dir / HISTORY_FILE, index=False)
    (out_dir / SUMMARY_FILE).write_text(json.dumps(asdict(summary), indent=2) + "\n")
    print(
        f"best epoch {summary.best_epoch} of {summary.stopped_epoch}, "
        f"val_loss {summary.best_val_loss:.4f} -> {out_dir / MODEL_FILE}"
    )
    return summary
