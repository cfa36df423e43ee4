"""The obvious alternative to the pipeline: one Python script that trains the same four models
with the same params, seed and early stopping on the same arrays, and prints test metrics. No
validation, tracking, orchestration or registry. Compare with a full `dvc repro --force`.

Usage, in a project after `make run` (reads data/processed/*):
    time .venv/bin/python bench/plain_script.py
"""

from __future__ import annotations

import time
from pathlib import Path

start = time.perf_counter()


def main() -> None:
    import keras

    from pipelines.config import load_config
    from pipelines.data.preprocessing import SPEC_FILE, Preprocessing, load_split
    from pipelines.model.builders import build_model
    from pipelines.model.evaluation import evaluate_model
    from pipelines.model.training import seed_everything

    imported = time.perf_counter()
    cfg = load_config("params.yaml")
    for name, task in cfg.models.items():
        t0 = time.perf_counter()
        seed_everything(cfg.base.seed)
        data = Path(cfg.paths.processed) / task.dataset
        prep = Preprocessing.load(data / SPEC_FILE)
        x_train, y_train = load_split(data, "train", prep)
        x_val, y_val = load_split(data, "validation", prep)
        model = build_model(task.family, cfg.model_params(name), prep, task.train)
        history = model.fit(
            x_train,
            y_train,
            validation_data=(x_val, y_val),
            epochs=task.train.max_epochs,
            batch_size=task.train.batch_size,
            shuffle=True,
            callbacks=[
                keras.callbacks.EarlyStopping(
                    monitor="val_loss", patience=task.train.patience, restore_best_weights=True
                )
            ],
            verbose=0,
        )
        out = Path("/tmp/plain-script") / name
        out.mkdir(parents=True, exist_ok=True)
        model.save(out / "model.keras")
        metrics = evaluate_model(name, out / "model.keras", data, out)
        print(
            f"{name}: {len(history.history['loss'])} epochs, {time.perf_counter() - t0:.1f} s, "
            f"test {metrics['test']}"
        )
    print(f"imports {imported - start:.1f} s; total {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
