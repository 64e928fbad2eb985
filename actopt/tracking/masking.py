"""MLflow's own output on the terminal: no password of a tracking URI in its log lines, its warnings and the
"View run ... at: URL" lines it writes for a tracking server; no traceback of a store error that actopt reports
on one line."""

from __future__ import annotations

import logging
import os
import warnings

from actopt.errors import mask_credentials

# Loggers whose handlers print to the terminal: MLflow's own, and the root logger that the libraries under it
# (urllib3, alembic, SQLAlchemy) propagate to.
LOGGERS = ("", "mlflow")
# MLflow writes the run's URL straight to stdout, not through a logger: with a password in it, it is left out.
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


def hide_credentials(uri: str) -> None:
    """Mask credentials in every handler MLflow and the root logger have now, and in warnings; keep
    MLflow from printing a URL that would carry them."""
    for name in LOGGERS:
        for handler in logging.getLogger(name).handlers:
            if _FILTER not in handler.filters:
                handler.addFilter(_FILTER)
    warnings.formatwarning = masked_warning
    logging.getLogger(STORE_ERROR_LOGGER).setLevel(logging.CRITICAL)
    if mask_credentials(uri) != uri:
        os.environ[SUPPRESS_URL_VARIABLE] = "true"
