"""Progress bars (rich) that switch themselves off when stderr is not a terminal."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

T = TypeVar("T")

console = Console(stderr=True)


def progress_enabled(requested: bool | None = None) -> bool:
    """``None`` means: on when stderr is a terminal."""
    return console.is_terminal if requested is None else requested


def track(items: Iterable[T], description: str, total: int | None = None, enabled: bool | None = None) -> Iterator[T]:
    """Iterate over ``items`` with a progress bar when enabled; otherwise a plain iteration."""
    if not progress_enabled(enabled):
        yield from items
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(description, total=total if total is not None else _len_or_none(items))
        for item in items:
            yield item
            bar.advance(task)


def _len_or_none(items: Iterable[object]) -> int | None:
    try:
        return len(items)  # type: ignore[arg-type]
    except TypeError:
        return None
