"""Registries: every method is found by name, so the CLI, configs and `backdoorlab list` share one list.

:meth:`Registry.build` is the one way to make a method from its name and parameters, and :func:`describe` reads
a method's parameters (type, default, range, description) from its pydantic schema.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel

from .errors import ConfigError
from .utils.validation import build_validated

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> object table for one family (datasets, models, attacks, defenses, triggers).

    >>> attacks = Registry("attack")
    >>> @attacks.register("badnets")
    ... class BadNets: ...
    >>> attacks.get("badnets").__name__
    'BadNets'
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        """The object registered as ``name``; an unknown name raises :class:`ConfigError` listing the valid ones."""
        try:
            return self._items[name]
        except KeyError:
            valid = ", ".join(sorted(self._items)) or "(none registered)"
            raise ConfigError(f"unknown {self.kind} {name!r}; valid names: {valid}") from None

    def build(self, name: str, params: Mapping[str, Any] | None = None, *, where: str | None = None) -> Any:
        """The method registered as ``name``, made from ``params`` and validated by its pydantic schema.

        An unknown name, an unknown parameter or a bad value raises :class:`ConfigError` in one line that names
        the field path, prefixed by ``where`` (default ``"<kind> <name>"``): ``attacks[0] (badnets).poison_rate:
        Input should be less than or equal to 1 (got 2.0)``.
        """
        cls = self.get(name)
        if not (isinstance(cls, type) and issubclass(cls, BaseModel)):
            raise TypeError(f"{self.kind} {name!r} is not built from parameters (it is not a pydantic model)")
        return build_validated(cls, dict(params or {}), where=f"{self.kind} {name}" if where is None else where)

    def unregister(self, name: str) -> None:
        """Remove ``name`` (test-only methods are registered for one test, then removed); ConfigError if absent."""
        self.get(name)
        del self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def items(self) -> Iterator[tuple[str, T]]:
        return iter(sorted(self._items.items()))

    def __contains__(self, name: object) -> bool:
        return name in self._items


@dataclass(frozen=True)
class ParameterInfo:
    """One parameter of a method, as its schema declares it.

    Attributes:
        name: the parameter's name (the key in a config or ``-p KEY=VALUE``).
        type: its type as written in Python (``float``, ``int | None``, ``list[str]``); ``str`` for choices.
        default: its default value as plain data (a nested schema's: the fields it changes); None when
            ``required``.
        required: True when the parameter has no default.
        range: the allowed interval from the schema's bounds (``(0, 1]``, ``>= 1``), or None.
        choices: the allowed values of a choice parameter, or None.
        description: what the parameter does.
    """

    name: str
    type: str
    default: Any
    required: bool
    range: str | None
    choices: tuple[Any, ...] | None
    description: str


def describe(cls: type[BaseModel]) -> list[ParameterInfo]:
    """The parameters of method class ``cls`` in declaration order, read from its pydantic schema."""
    infos = []
    for name, field in cls.model_fields.items():
        required = field.is_required()
        default = None if required else field.get_default(call_default_factory=True)
        if isinstance(default, BaseModel):  # a nested method's parameters: those that differ from its defaults
            default = default.model_dump(exclude_defaults=True)
        infos.append(
            ParameterInfo(
                name=name,
                type=type_name(field.annotation),
                default=default,
                required=required,
                range=_bounds(field.metadata),
                choices=_choices(field.annotation),
                description=" ".join((field.description or "").split()),
            )
        )
    return infos


def summary(cls: type) -> str:
    """The first sentence-paragraph of ``cls``'s docstring, on one line."""
    doc = inspect.getdoc(cls) or ""
    return " ".join(doc.split("\n\n")[0].split())


def type_name(tp: Any) -> str:
    """``tp`` as a reader writes it: ``float | list[float]``, ``tuple[int, int]``, ``str`` for choices."""
    origin, args = get_origin(tp), get_args(tp)
    if tp is type(None) or tp is None:
        return "None"
    if origin is Literal:
        return " | ".join(dict.fromkeys(type(a).__name__ for a in args))
    if origin is Union or origin is types.UnionType:
        return " | ".join(dict.fromkeys(type_name(a) for a in args))
    if origin is not None and hasattr(tp, "__metadata__"):  # Annotated[X, ...]
        return type_name(args[0])
    if origin is not None:
        inner = ", ".join("..." if a is Ellipsis else type_name(a) for a in args)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]" if args else origin.__name__
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _choices(tp: Any) -> tuple[Any, ...] | None:
    """The values of a ``Literal`` annotation (``Literal[...] | None`` included), else None."""
    if get_origin(tp) is Literal:
        return get_args(tp)
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1 and get_origin(args[0]) is Literal:
            return (*get_args(args[0]), None)
    return None


def _bounds(metadata: list[Any]) -> str | None:
    """``(0, 1]``, ``>= 1`` or ``< 0.5`` from a field's ``gt``/``ge``/``lt``/``le`` constraints, else None."""
    low = high = None
    for m in metadata:
        if isinstance(m, annotated_types.Gt):
            low = ("(", "> ", m.gt)
        elif isinstance(m, annotated_types.Ge):
            low = ("[", ">= ", m.ge)
        elif isinstance(m, annotated_types.Lt):
            high = (")", "< ", m.lt)
        elif isinstance(m, annotated_types.Le):
            high = ("]", "<= ", m.le)
    if low and high:
        return f"{low[0]}{low[2]}, {high[2]}{high[0]}"
    if low or high:
        bracket, op, value = low or high  # type: ignore[misc]
        return f"{op}{value}"
    return None
