"""The pipeline's known failures, importable from every wing without a cycle.

A `KnownFailure` is an expected outcome whose message says everything the user needs: bad
params, bad data, a failed suite, drift, a diverged training, an unreachable orchestrator. The
CLI prints its message once, without a traceback (`PIPELINES_DEBUG=1` shows it), and the
Prefect tasks never retry one: the same input fails the same way again.
"""

from __future__ import annotations


class KnownFailure(Exception):
    """An expected failure: print the message, skip the traceback, do not retry."""


class ConfigError(KnownFailure, ValueError):
    """`params.yaml` is missing, malformed or names something that does not exist."""


class DataError(KnownFailure, ValueError):
    """A data file is missing, unreadable or not a table."""


class ValidationFailed(KnownFailure, RuntimeError):
    """The data broke its expectation suite; the message lists every failure."""


class TrainingDiverged(KnownFailure, RuntimeError):
    """The loss became NaN or infinite; no model is saved. `curves` holds the per-epoch
    history up to the divergence (a DataFrame); the open MLflow run ends FAILED."""

    def __init__(self, message: str, *, reason: str = "", curves: object = None):
        super().__init__(message)
        self.reason, self.curves = reason, curves

    @property
    def run_failure(self) -> str:
        """The `failure` tag of the MLflow run it ends."""
        return f"diverged: {self.reason}"


def failure_summary(err: BaseException, limit: int = 5000) -> str:
    """What ended a run or a trial, for its `failure` tag: the error's own summary when it has
    one (a diverged loss), else its type and message."""
    return (getattr(err, "run_failure", "") or f"{type(err).__name__}: {err}")[:limit]


class OrchestrationError(KnownFailure, RuntimeError):
    """The Prefect server could not be reached or started."""


class GateRefused(KnownFailure, RuntimeError):
    """`pipelines promote` asked for a version that does not pass the gate; the message says
    which checks failed and by how much."""


class StoreUnavailable(KnownFailure, RuntimeError):
    """The MLflow tracking store failed to answer (a stopped server, a locked or unreadable
    database), as opposed to answering that something does not exist."""
