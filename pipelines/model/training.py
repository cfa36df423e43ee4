"""Train one model with early stopping and write the model and its history."""

from __future__ import annotations

import json
import logging
import os
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

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
from pipelines.model.builders import Vocabularies, as_saved, build_model
from pipelines.model.scoring import OUTPUTS_FILE, write_test_outputs
from pipelines.model_config import ModelRef

log = logging.getLogger(__name__)

MODEL_FILE = "model.keras"
HISTORY_FILE = "history.csv"
TRAINING_FILE = "training.json"


@dataclass(frozen=True)
class TrainingSummary:
    model: str
    family: str
    seed: int
    best_epoch: int
    stopped_epoch: int
    best_val_loss: float
    search: dict[str, Any] | None = None  # the search whose best params it was trained on


def seed_everything(seed: int) -> None:
    """Same seed, same data, same params: same weights and metrics (on CPU)."""
    os.environ["PYTHONHASHSEED"] = str(seed)
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    # Keras draws the seed of every unseeded layer and initializer from Python's shared
    # `random` module, which other threads draw from too: the Prefect client's websocket
    # keepalive pings do, every few seconds, so a ping between seeding and building changed
    # the initial weights (seen as run-to-run differences within a search). A generator of
    # Keras' own, seeded here, makes a build depend on the seed alone.
    # A private hook (tests/test_private_hooks.py): without it, builds would silently depend
    # on other threads again, so its absence is an error, not a skipped step.
    from keras.src.random import seed_generator

    if not hasattr(seed_generator, "python_random"):
        raise RuntimeError(
            "keras.src.random.seed_generator.python_random is gone (Keras changed): seeding "
            "cannot make model builds deterministic; see tests/test_private_hooks.py"
        )
    seed_generator.python_random = random.Random(seed)


def distribution_strategy(name: str) -> Any:
    """The `tf.distribute` strategy named in `train.distribute`: `none` is TensorFlow's default
    (one device); `mirrored` replicates the model on every GPU of this node (or the CPU)."""
    import tensorflow as tf

    if name == "mirrored":
        strategy = tf.distribute.MirroredStrategy()
        log.info(f"MirroredStrategy over {strategy.num_replicas_in_sync} replica(s)")
        return strategy
    return tf.distribute.get_strategy()


def _streamed(
    data_dir: Path,
    split: str,
    prep: Preprocessing,
    batch_rows: int = 65_536,
    seed: int | None = None,
) -> Any:
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


def _cut_short(text: Any, label: Any, draws: Any, share: float) -> tuple[Any, Any]:
    """With probability `share`, one short form of `text` (graph ops, inside tf.data): the
    headline (first line), the headline and first paragraph (up to the second blank line),
    or the first 5 to 60 words, each a third of the time; else the text as it is. `draws`:
    three random int64 values for this example."""
    import tensorflow as tf

    u = tf.cast(draws % 1_000_000, tf.float32) / 1e6
    headline = tf.strings.split(text, "\n")[0]
    lead = tf.strings.reduce_join(tf.strings.split(text, "\n\n")[:2], separator="\n\n")
    words = tf.strings.split(text)[: 5 + tf.cast(draws[2] % 56, tf.int32)]
    span = tf.strings.reduce_join(words, separator=" ")
    short = tf.where(u[1] < 1 / 3, headline, tf.where(u[1] < 2 / 3, lead, span))
    return tf.where(u[0] < share, short, text), label


def _strings(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    seed: int | None = None,
    short_texts: float = 0.0,
) -> Any:
    """Raw strings and targets as a `tf.data` pipeline, reshuffled every epoch when seeded.
    With `short_texts` (training only), that share of the documents is cut to a short form
    each epoch (`_cut_short`), drawn from the seed: the model learns from headlines and
    paragraphs as users send them, not only from full articles."""
    import tensorflow as tf

    data = tf.data.Dataset.from_tensor_slices((tf.constant(x.tolist()), y))
    if seed is not None:
        data = data.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
        if short_texts > 0:
            draws = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(3)
            data = tf.data.Dataset.zip(data, draws).map(
                lambda pair, d: _cut_short(pair[0], pair[1], d, short_texts)
            )
    return data.batch(batch_size)


@dataclass(frozen=True)
class TrainingData:
    """A model's training and validation splits, read once (a search fits many models on
    them): arrays, or `None` for a sharded dataset, which is streamed from its shards; and
    what text tokenizers adapted on the training texts learned, for the next model."""

    data_dir: Path
    prep: Preprocessing
    x_train: np.ndarray | None = None
    y_train: np.ndarray | None = None
    x_val: np.ndarray | None = None
    y_val: np.ndarray | None = None
    vocabularies: Vocabularies = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def load(cls, data_dir: Path) -> TrainingData:
        prep = Preprocessing.load(data_dir / SPEC_FILE)
        if prep.sharded:
            return cls(data_dir, prep)
        x_train, y_train = load_split(data_dir, "train", prep)
        x_val, y_val = load_split(data_dir, "validation", prep)
        return cls(data_dir, prep, x_train, y_train, x_val, y_val)

    @property
    def rows(self) -> tuple[int, int]:
        if self.prep.sharded:
            return self.prep.rows["train"], self.prep.rows["validation"]
        x_train, _, x_val, _ = self.arrays()
        return len(x_train), len(x_val)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(x_train, y_train, x_val, y_val) of a dataset read into memory."""
        if self.x_train is None or self.y_train is None or self.x_val is None or self.y_val is None:
            raise ValueError(f"{self.data_dir}: a sharded dataset is streamed, not read whole")
        return self.x_train, self.y_train, self.x_val, self.y_val

    def fit_inputs(self, batch_size: int, seed: int, short_texts: float = 0.0) -> dict[str, Any]:
        """`model.fit`'s data arguments: seeded shuffling every epoch (and, for text, the
        share of training documents cut short each epoch)."""
        prep = self.prep
        if prep.sharded:
            # Streamed from the shards: a new shard order and row order every epoch (seeded).
            return {
                "x": _streamed(self.data_dir, "train", prep, batch_size, seed),
                "validation_data": _streamed(self.data_dir, "validation", prep),
                "shuffle": False,  # the stream shuffles itself
            }
        if prep.modality == "text":
            # Keras takes strings as tensors, not NumPy arrays: a seeded, reshuffled tf.data.
            x_train, y_train, x_val, y_val = self.arrays()
            return {
                "x": _strings(x_train, y_train, batch_size, seed, short_texts),
                "validation_data": _strings(x_val, y_val, batch_size),
                "shuffle": False,
            }
        return {
            "x": self.x_train,
            "y": self.y_train,
            "validation_data": (self.x_val, self.y_val),
            "batch_size": batch_size,
            "shuffle": True,
        }


def fit_model(
    cfg: PipelineConfig,
    model: ModelRef,
    data: TrainingData,
    callbacks: Sequence[object] = (),
    verbose: int = 2,
) -> tuple[Any, pd.DataFrame]:
    """Build `model` from its params and fit it with early stopping on validation loss (best
    weights restored). Returns the Keras model to save (`builders.as_saved`: a text
    transformer fitted on `train_windows` reads all its `windows`) and its per-epoch curves;
    raises `TrainingDiverged` when the loss stops being finite. `cfg`: the seed."""
    import keras

    train_cfg = model.train
    seed_everything(cfg.base.seed)
    fit_data = data.fit_inputs(train_cfg.batch_size, cfg.base.seed, train_cfg.short_texts)
    strategy = distribution_strategy(train_cfg.distribute)
    params = model.params
    with strategy.scope():
        texts = None if data.prep.sharded or data.prep.modality != "text" else data.x_train
        net = build_model(
            model.family,
            params.for_training(),
            data.prep,
            train_cfg,
            texts,
            adapted=data.vocabularies,
        )
    callbacks = [
        keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=train_cfg.patience, restore_best_weights=True
        ),
        keras.callbacks.TerminateOnNaN(),
        *callbacks,
    ]
    history = net.fit(**fit_data, epochs=train_cfg.max_epochs, callbacks=callbacks, verbose=verbose)
    curves = pd.DataFrame(history.history)
    curves.insert(0, "epoch", range(1, len(curves) + 1))
    bad = curves[~np.isfinite(curves[["loss", "val_loss"]]).all(axis=1)]
    if len(bad) or len(curves) == 0:
        epoch = int(bad["epoch"].iloc[0]) if len(bad) else 1
        loss = bad["loss"].iloc[0] if len(bad) else float("nan")
        raise TrainingDiverged(
            f"{model.name}: loss became {loss} at epoch {epoch} "
            f"(learning_rate={train_cfg.learning_rate}); training stopped (TerminateOnNaN), "
            "nothing was saved or registered; its MLflow run ends FAILED",
            reason=f"loss became {loss} at epoch {epoch}",
            curves=curves,
        )
    with strategy.scope():
        net = as_saved(net, model.family, params, data.prep, train_cfg)
    return net, curves


def best_epoch(curves: pd.DataFrame) -> int:
    """The epoch (from 1) whose weights early stopping kept: the lowest validation loss."""
    return int(curves["val_loss"].idxmin()) + 1


def train_model(
    cfg: PipelineConfig,
    model: ModelRef,
    data_dir: Path,
    out_dir: Path,
    callbacks: Sequence[object] = (),
    search: dict[str, Any] | None = None,
) -> TrainingSummary:
    """Build `model` from its params, fit it with early stopping on validation loss
    (best weights restored) and save model, its outputs on the test split, per-epoch history
    and a summary to `out_dir`.
    `callbacks`: more Keras callbacks (the orchestration wing passes one that logs each epoch);
    `search`: the search `cfg` and `model` were tuned by, kept in the summary."""
    data = TrainingData.load(data_dir)
    train_rows, val_rows = data.rows
    log.info(
        f"training {model.name} ({model.family}) on {train_rows:,} rows, "
        f"validating on {val_rows:,}, up to {model.train.max_epochs} epochs"
        + (" (streamed from shards)" if data.prep.sharded else "")
    )
    net, curves = fit_model(cfg, model, data, callbacks)
    best = best_epoch(curves)
    summary = TrainingSummary(
        model=model.name,
        family=model.family,
        seed=cfg.base.seed,
        best_epoch=best,
        stopped_epoch=len(curves),
        best_val_loss=float(curves["val_loss"].iloc[best - 1]),
        search=search,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".{MODEL_FILE}.tmp.keras"
    net.save(tmp)
    tmp.replace(out_dir / MODEL_FILE)
    # The saved model's test outputs, so that evaluate needs no TensorFlow of its own.
    write_test_outputs(out_dir / MODEL_FILE, data_dir, out_dir / OUTPUTS_FILE)
    curves.to_csv(out_dir / HISTORY_FILE, index=False)
    (out_dir / TRAINING_FILE).write_text(json.dumps(asdict(summary), indent=2) + "\n")
    log.info(
        f"best epoch {summary.best_epoch} of {summary.stopped_epoch}, "
        f"val_loss {summary.best_val_loss:.4f} -> {out_dir / MODEL_FILE}"
    )
    return summary
