"""The metrics the pipeline computes, by name: which way each improves, which a champion
comparison or a search may use, and the short forms a text model is also scored on. No
dependencies: the config, the metrics and the gate read the same tables."""

from __future__ import annotations

from typing import Literal

# Short forms of each test document that a text classifier is also scored on (README: text at
# every length): the headline, the headline and first paragraph, the first 50 words.
SHORT_FORMS = ("headline", "lead", "words50")
# The metrics a gate may name, and which way each improves ("max": higher is better).
METRIC_DIRECTIONS: dict[str, Literal["max", "min"]] = {
    "accuracy": "max",
    "roc_auc": "max",
    "f1": "max",
    "log_loss": "min",
    "mae": "min",
    "rmse": "min",
    "mape": "min",
    **{f"{metric}_{form}": "max" for form in SHORT_FORMS for metric in ("accuracy", "f1")},
}

# Metrics a champion comparison can use: each is a mean over rows (rmse: rooted after), so a
# paired bootstrap over rows gives its distribution. Per problem type, the default.
PRIMARY_METRICS = {
    "classification": ("accuracy", "log_loss"),
    "regression": ("mae", "rmse", "mape"),
}
DEFAULT_PRIMARY = {"classification": "accuracy", "regression": "mae"}

# What a search may optimize: a validation value Keras logs every epoch, per problem type.
SEARCH_METRICS: dict[str, dict[str, Literal["minimize", "maximize"]]] = {
    "classification": {"val_loss": "minimize", "val_accuracy": "maximize"},
    "regression": {"val_loss": "minimize", "val_mae": "minimize"},
}
