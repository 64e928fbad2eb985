"""Errors a user can cause, each carrying a one-line message, and the registry lookup that raises them."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TypeVar

Value = TypeVar("Value")

# How much of an underlying error a one-line message quotes: the sentence that says what happened
# ("database or disk is full", "Connection refused") fits; a page of SQL or a traceback does not.
DETAIL_LIMIT = 300
# user:password@ in a URI (http, https, postgresql, ...): the password never reaches a terminal or a log.
_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<secret>[^@/\s]*)@")


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
    """``text`` with the password of every ``scheme://user:password@host`` replaced by ``***``."""
    return _CREDENTIALS.sub(lambda match: f"{match['scheme']}{match['user']}:***@", text)


def one_line(text: str, limit: int = DETAIL_LIMIT) -> str:
    """``text`` on one line (whitespace collapsed), at most ``limit`` characters, credentials masked."""
    flat = " ".join(mask_credentials(str(text)).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def describe_error(error: BaseException, limit: int = DETAIL_LIMIT) -> str:
    """``TypeName: message`` of an exception, on one line; the type alone when it has no message."""
    detail = one_line(str(error), limit)
    return f"{type(error).__name__}: {detail}" if detail else type(error).__name__
