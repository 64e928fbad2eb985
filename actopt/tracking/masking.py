"""MLflow's own output on the terminal: no password of a tracking URI in its log lines, its warnings and the
"View run ... at: URL" lines it writes for a tracking server; no traceback of a store error that actopt reports
on one line."""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator

from actopt.errors import mask_credentials

# Loggers whose handlers print to the terminal: MLflow's own, and the root logger that the libraries under it
# (urllib3, alembic, SQLAlchemy) propagate to.
LOGGERS = ("", "mlflow")
# MLflow writes the run's URL straight to stdout, not through a logger, after each run that ends on a server:
# left out (a password could be in it, and it would interleave with actopt's own output).
SUPPRESS_URL_VARIABLE = "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"
# Logs every database error with its traceback before raising it; actopt reports the same error on one line.
STORE_ERROR_LOGGER = "mlflow.store.db.utils"


class MaskCredentials(logging.Filter):
    """Rewrites each record's message with every ``user:password@`` masked."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_credentials(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and record.exc_info[1] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_info, record.exc_text = None, mask_credentials(text)
        return True


_FILTER = MaskCredentials()
_format_warning = warnings.formatwarning


def masked_warning(message, category, filename, lineno, line=None) -> str:
    return mask_credentials(_format_warning(message, category, filename, lineno, line))


# Logger levels for the length of a call: the store's tracebacks (above), and MLflow's system-metrics monitor,
# which says at INFO that it starts and stops: four lines per run, per sweep child.
QUIET_LEVELS = {STORE_ERROR_LOGGER: logging.CRITICAL, "mlflow.system_metrics": logging.WARNING}


@contextlib.contextmanager
def masked_handlers() -> Iterator[None]:
    """The credential filter on every handler MLflow and the root logger have on entry, taken off again after."""
    added = [handler for name in LOGGERS for handler in logging.getLogger(name).handlers
             if _FILTER not in handler.filters]
    for handler in added:
        handler.addFilter(_FILTER)
    try:
        yield
    finally:
        for handler in added:
            handler.removeFilter(_FILTER)


@contextlib.contextmanager
def quiet_mlflow() -> Iterator[None]:
    """For the block: credentials masked in every handler MLflow and the root logger have and in warnings, the
    store's own tracebacks and the monitor's lines silenced, and none of MLflow's "View run ... at: URL" lines
    (they would carry a password, and actopt prints its own summary); all as before once the block ends."""
    loggers = {name: logging.getLogger(name) for name in QUIET_LEVELS}
    levels = {name: logger.level for name, logger in loggers.items()}
    format_warning = warnings.formatwarning
    suppress = os.environ.get(SUPPRESS_URL_VARIABLE)
    try:
        with masked_handlers():
            for name, level in QUIET_LEVELS.items():
                # setLevel empties every logger's cache under logging's module lock: only where it changes.
                if level > levels[name]:
                    loggers[name].setLevel(level)
            warnings.formatwarning = masked_warning
            os.environ[SUPPRESS_URL_VARIABLE] = "true"
            yield
    finally:
        for name, logger in loggers.items():
            if logger.level != levels[name]:
                logger.setLevel(levels[name])
        warnings.formatwarning = format_warning
        if suppress is None:
            os.environ.pop(SUPPRESS_URL_VARIABLE, None)
        else:
            os.environ[SUPPRESS_URL_VARIABLE] = suppress
