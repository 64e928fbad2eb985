"""Errors a user can cause, each carrying a one-line message, and the registry lookup that raises them."""

from __future__ import annotations

from typing import Mapping, TypeVar

Value = TypeVar("Value")


class UserError(Exception):
    """Bad input: the CLI prints the message on one line and exits non-zero, before any run exists."""


class ConfigError(UserError, ValueError):
    """A configuration value that cannot be used."""


class DataError(UserError):
    """A dataset that cannot be found, downloaded or read."""


def choose(registry: Mapping[str, Value], name: str, kind: str) -> Value:
    """Look a name up in a plain-dict registry; an unknown name lists the valid ones."""
    try:
        return registry[name]
    except KeyError:
        raise ConfigError(f"unknown {kind} {name!r}; valid: {', '.join(registry)}") from None
