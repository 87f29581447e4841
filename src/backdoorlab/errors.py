"""Errors that mean "the user asked for something wrong", as opposed to bugs.

The CLI turns every :class:`BackdoorlabError` into one line on stderr and exit code 2.
"""

from __future__ import annotations


class BackdoorlabError(Exception):
    """Bad input from the user: a wrong name, a value out of range, a missing or corrupt file."""


class ConfigError(BackdoorlabError, ValueError):
    """A configuration value is unknown, of the wrong type, or out of range."""


class DataError(BackdoorlabError):
    """A data file or folder is missing or does not have the expected layout."""


class ModelFileError(BackdoorlabError):
    """A model file is missing, corrupt, or would need unsafe loading."""


def check_range(name: str, value: float, low: float, high: float, *, low_open: bool = False) -> None:
    """Raise :class:`ConfigError` unless ``low <= value <= high`` (``low < value`` when ``low_open``)."""
    below = value <= low if low_open else value < low
    if below or value > high:
        bracket = "(" if low_open else "["
        raise ConfigError(f"{name} must be in {bracket}{low}, {high}], got {value}")
