"""Where the library's messages go. Library code logs through `logging`, each module under its
own `pipelines.<module>` logger; it never prints. An entry point (the CLI, a Prefect flow, a
test) calls `show_messages()` once, and each message then appears as the one line it is:

- inside a Prefect flow or task run, on that run's logger, so the Prefect UI shows it with
  the run (and the console shows it as Prefect's own lines);
- elsewhere on standard output, as `print` would put it (a warning starts with `WARNING`).

A run logger that cannot be had (a broken Prefect set-up) falls back to standard output.

Without `show_messages()` (the package used as a library), messages follow the caller's own
logging set-up.
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any

LOGGER = "pipelines"


def _run_logger() -> Any:
    """The current Prefect flow or task run's logger, or None outside one (Prefect is never
    imported for this: without it there is no run)."""
    if "prefect.context" not in sys.modules:
        return None
    from prefect.context import FlowRunContext, TaskRunContext

    if TaskRunContext.get() is None and FlowRunContext.get() is None:
        return None
    from prefect.logging import get_run_logger

    return get_run_logger()


class _Console(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            try:
                run_logger = _run_logger()
            except Exception:  # no usable run logger: the line still shows
                run_logger = None
            if run_logger is not None:  # Prefect's line names the level itself
                run_logger.log(record.levelno, message)
                return
            if record.levelno >= logging.WARNING:
                message = f"{record.levelname} {message}"
            print(message, file=sys.stdout, flush=True)  # the stream is looked up per line
        except Exception:
            self.handleError(record)


_ADDING = threading.Lock()


def show_messages() -> None:
    """Show the `pipelines` loggers' messages (INFO and up) as described above; idempotent,
    also when two threads of one process call it at once."""
    logger = logging.getLogger(LOGGER)
    with _ADDING:
        if not any(isinstance(h, _Console) for h in logger.handlers):
            logger.addHandler(_Console())
        logger.setLevel(logging.INFO)
        logger.propagate = False
