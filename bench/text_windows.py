"""The saved text-transformer's cost per text length: it encodes only the windows that hold a
token, against the same weights reading every one of its `windows`.

Usage, in a project after `make run` (reads `models/text-transformer/model.keras` and the
BBC News test split):
    .venv/bin/python bench/text_windows.py [repeats]

For the whole test articles and three short forms (headline, headline + first paragraph, first
50 words): the median seconds of `predict` over the test split (default 3 repeats, after one
warm-up batch), both ways, and the largest difference between their probabilities.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.config import load_config
from pipelines.data.preprocessing import Preprocessing
from pipelines.model.builders import build_model
from pipelines.model.scoring import short_form

NAME = "text-transformer"


def main(repeats: int = 3) -> None:
    import keras
    import tensorflow as tf

    cfg = load_config("params.yaml")
    model_cfg = cfg.models[NAME]
    params = cfg.model_params(NAME)
    data_dir = Path(cfg.paths.processed) / model_cfg.dataset
    prep = Preprocessing.load(data_dir / "preprocessing.json")
    saved = keras.saving.load_model(Path(cfg.paths.models) / NAME / "model.keras")
    every = build_model(
        NAME,
        params.model_copy(update={"train_windows": None}),
        prep,
        model_cfg.train,
        vocabulary=saved.get_layer("tokenize").get_vocabulary(),
    )
    for layer in every.layers:
        if layer.weights and layer.name != "tokenize":
            layer.set_weights(saved.get_layer(layer.name).get_weights())
    texts = pd.read_parquet(data_dir / "test.parquet")[prep.features[0]].tolist()
    print(f"{len(texts)} test texts; {params.windows} windows of {params.sequence_length} tokens")
    print("| input | every window (s) | filled windows only (s) | speed-up | largest difference |")
    print("| --- | --- | --- | --- | --- |")
    for form in ("whole", "headline", "lead", "words50"):
        batch = tf.constant(texts if form == "whole" else [short_form(t, form) for t in texts])
        seconds, answers = [], []
        for model in (every, saved):
            model.predict(batch[:32], verbose=0)
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                answer = model.predict(batch, verbose=0)
                times.append(time.perf_counter() - start)
            seconds.append(statistics.median(times))
            answers.append(answer)
        gap = float(np.abs(answers[0] - answers[1]).max())
        print(
            f"| {form} | {seconds[0]:.2f} | {seconds[1]:.2f} | "
            f"{seconds[0] / seconds[1]:.1f}x | {gap:.1e} |"
        )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
