"""Turn pydantic's validation errors into one line that names the field."""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ValidationError

from ..errors import ConfigError

M = TypeVar("M", bound=BaseModel)


def describe_validation_error(err: ValidationError, where: str = "") -> str:
    """``where.field.sub: message (got value)`` for the first error, plus a count of the others."""
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    field = ".".join(p for p in (where, loc) if p)
    msg = "unknown field" if first["type"] == "extra_forbidden" else first["msg"].removeprefix("Value error, ")
    shown = first["type"] not in ("missing", "value_error") and not isinstance(first.get("input"), dict | list)
    got = f" (got {first['input']!r})" if shown and "input" in first else ""
    more = f" (and {err.error_count() - 1} more problem(s))" if err.error_count() > 1 else ""
    return f"{field}: {msg}{got}{more}" if field else f"{msg}{got}{more}"


def build_validated(cls: type[M], params: dict, where: str = "") -> M:
    """``cls(**params)`` with any validation error raised as :class:`ConfigError` naming the field."""
    try:
        return cls.model_validate(params)
    except ValidationError as err:
        raise ConfigError(describe_validation_error(err, where)) from None
