"""The champion and previous-champion aliases: compare-and-set promotion under the
registration lock, and rollback."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipelines.environment import signals_deferred
from pipelines.registry.tracking.connection import connect, tracking_uri

CHAMPION = "champion"


PREVIOUS_CHAMPION = "previous-champion"


def alias_version(name: str, alias: str = CHAMPION) -> str | None:
    """The version behind `name@alias`, or None when there is none. Other errors (a locked
    database, an unreachable server) are raised, not mistaken for "no champion"."""
    mlflow = connect()
    try:
        return str(mlflow.MlflowClient().get_model_version_by_alias(name, alias).version)
    except mlflow.exceptions.MlflowException as err:
        if err.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


class ChampionMoved(RuntimeError):
    """`@champion` no longer points at the version a challenger was compared with."""


def promote(name: str, version: str, expected: str | None) -> str | None:
    """Make `version` the champion, only if `@champion` still is `expected` (the version it
    was compared with; None: there was none): compare-and-set, else `ChampionMoved`. The
    champion it replaces keeps `previous-champion`.

    Call it under `model_lock(name)`: the lock makes read-and-move one step for every
    registration that shares this store from this host. The previous-champion alias is set
    first, so a failure between the two steps leaves the old champion in place. Returns the
    replaced version, if any.
    """
    client = connect().MlflowClient()
    current = alias_version(name, CHAMPION)
    if current != expected:
        raise ChampionMoved(
            f"@{CHAMPION} moved from {expected or 'none'} to {current} while version {version} "
            f"was compared with {expected or 'no champion'}; compare it again with "
            f"`pipelines promote {name} {version}`"
        )
    with signals_deferred():  # both aliases move, or neither
        if current is not None and current != version:
            client.set_registered_model_alias(name, PREVIOUS_CHAMPION, current)
        client.set_registered_model_alias(name, CHAMPION, version)
    return current if current != version else None


LOCK_WAIT_S = 900.0


@contextmanager
def model_lock(name: str, wait_s: float = LOCK_WAIT_S) -> Iterator[None]:
    """Hold the registration lock of registered model `name` in this store: one registration,
    promotion or rollback of a model at a time, on this host (a file lock, `flock`, keyed by
    the tracking URI and the model, so every stage, experiment copy and CLI call that shares
    the store shares it). Processes on other machines sharing an MLflow server are not
    covered: there the compare-and-set in `promote` refuses a move whose champion changed."""
    import hashlib

    from pipelines.environment import file_lock

    uri = tracking_uri()
    key = hashlib.sha1(uri.encode()).hexdigest()[:12]
    # SQLite takes one writer at a time: with a parallel runner (threads, Dask), registrations
    # of different models would meet "database is locked", so on SQLite they all take turns.
    # An MLflow server takes parallel writes: there only one model's registrations do.
    scope = "all-models" if uri.startswith("sqlite:") else name
    model = hashlib.sha1(scope.encode()).hexdigest()[:12]
    path = Path(tempfile.gettempdir()) / "pipelines-locks" / f"{key}-{model}.lock"
    what = (
        "another registration in this SQLite store"
        if scope != name
        else f"another {name} registration"
    )
    with file_lock(path, wait_s, what):
        yield


def rollback(name: str) -> tuple[str, str]:
    """Swap `champion` and `previous-champion`; return (new champion, new previous)."""
    client = connect().MlflowClient()
    with model_lock(name):
        current, previous = alias_version(name, CHAMPION), alias_version(name, PREVIOUS_CHAMPION)
        if previous is None or current is None:
            raise LookupError(f"{name}: no {PREVIOUS_CHAMPION} version to roll back to")
        with signals_deferred():  # both aliases move, or neither
            client.set_registered_model_alias(name, CHAMPION, previous)
            client.set_registered_model_alias(name, PREVIOUS_CHAMPION, current)
    return previous, current
