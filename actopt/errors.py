"""Errors a user can cause, each carrying a one-line message, and the registry lookup that raises them."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TypeVar

Value = TypeVar("Value")

# How much of an underlying error a one-line message quotes: the sentence that says what happened
# ("database or disk is full", "Connection refused") fits; a page of SQL or a traceback does not.
DETAIL_LIMIT = 300
# A URI in a text (http, https, postgresql, ...): its scheme, then everything up to a space or a quote.
_URI = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<rest>[^\s'\"<>]+)")
# Where a user name alone is a secret (a token: ``https://TOKEN@host``); a database's user name names a role.
TOKEN_SCHEMES = ("http://", "https://")
# Query parameters that carry a secret (libpq's password and sslpassword, an API's token or key).
_SECRET_QUERY = re.compile(r"(?P<key>[?&;][\w.-]*(?:password|passwd|pwd|token|secret|key)=)[^&#;]*", re.IGNORECASE)


class UserError(Exception):
    """Bad input: the CLI prints the message on one line and exits non-zero, before any run exists."""


class ConfigError(UserError, ValueError):
    """A configuration value that cannot be used."""


class DataError(UserError):
    """A dataset that cannot be found, downloaded or read."""


class OutOfMemory(Exception):
    """A run that needs more memory than the machine has: its run ends FAILED with this one line."""


def choose(registry: Mapping[str, Value], name: str, kind: str) -> Value:
    """Look a name up in a plain-dict registry; an unknown name lists the valid ones."""
    try:
        return registry[name]
    except KeyError:
        raise ConfigError(f"unknown {kind} {name!r}; valid: {', '.join(registry)}") from None


def mask_credentials(text: str) -> str:
    """``text`` with every credential of every URI in it replaced by ``***``: the password of
    ``scheme://user:password@host`` (a password may hold ``@`` or ``/``: the host follows the last ``@``),
    an http(s) user name without a password (``http://TOKEN@host``, a token), and a secret query parameter
    (``?password=``, ``&token=``, ``&api_key=``)."""
    return _URI.sub(lambda match: match["scheme"] + mask_uri_rest(match["rest"], match["scheme"]), text)


def mask_uri_rest(rest: str, scheme: str) -> str:
    """What follows ``scheme://``, its credentials masked."""
    head_end = min((index for index in (rest.find("?"), rest.find("#")) if index >= 0), default=len(rest))
    at = rest.rfind("@", 0, head_end)
    user_info = rest[:at]
    # A "/" ends the host: an "@" after one is in the path, unless a "user:" came before it (a password with "/").
    if at >= 0 and ("/" not in user_info or ":" in user_info.split("/", 1)[0]):
        user, colon, _ = user_info.partition(":")
        if colon or scheme.lower() in TOKEN_SCHEMES:
            rest = (f"{user}:***" if colon else "***") + rest[at:]
    return _SECRET_QUERY.sub(lambda match: f"{match['key']}***", rest)


def one_line(text: str, limit: int = DETAIL_LIMIT) -> str:
    """``text`` on one line (whitespace collapsed), at most ``limit`` characters, credentials masked."""
    flat = " ".join(mask_credentials(str(text)).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def describe_error(error: BaseException, limit: int = DETAIL_LIMIT) -> str:
    """``TypeName: message`` of an exception, on one line; the type alone when it has no message."""
    detail = one_line(str(error), limit)
    return f"{type(error).__name__}: {detail}" if detail else type(error).__name__


def failed_library(error: BaseException) -> str | None:
    """The top-level package whose import raised ``error`` (torch, mlflow, ...), from its traceback: the first
    module body run outside actopt; None when no import was under way (Python leaves importlib's frames out)."""
    trace, importing = error.__traceback__, False
    while trace is not None:
        if trace.tb_frame.f_code.co_name == "<module>":
            importing = True
            package = trace.tb_frame.f_globals.get("__name__", "").split(".")[0]
            if package not in ("actopt", "__main__"):
                return package
        trace = trace.tb_next
    return (getattr(error, "name", None) or "a module") if importing else None


def import_failure(error: BaseException) -> str | None:
    """One line for a library that could not be imported, with the virtual memory limit when one is set (a low
    ``ulimit -v`` is what makes torch's shared libraries fail to map); None for an error not raised by an import."""
    import resource

    library = failed_library(error)
    if library is None:
        return None
    limit, _ = resource.getrlimit(resource.RLIMIT_AS)
    hint = ("" if limit == resource.RLIM_INFINITY else
            f"; the virtual memory limit is {limit / 2**30:.1f} GiB (ulimit -v {limit // 1024}): torch needs more")
    return f"cannot load {library}: {describe_error(error)}{hint}"
