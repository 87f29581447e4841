"""``backdoorlab runs``: the runs of a results store, one line each (name, config, status, cells, times)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import BackdoorlabError
from .config import parse_config
from .grid import expand_cells
from .store import RunSummary, open_store

HEADER = ("run", "config", "status", "cells done/total", "started (UTC)", "wall time")


@dataclass(frozen=True)
class RunEntry:
    """A stored run and its grid's size: ``total`` cells (None when its stored config no longer validates, e.g. a
    method since renamed or one registered only by a test)."""

    summary: RunSummary
    total: int | None

    def fields(self) -> tuple[str, ...]:
        """The line's columns, as :data:`HEADER` names them."""
        s = self.summary
        cells = f"{s.cells_done}/{'?' if self.total is None else self.total}"
        cells += f" ({s.cells_failed} failed)" if s.cells_failed else ""
        started = s.started.replace("T", " ").removesuffix("+00:00")
        wall = "-" if s.seconds is None else f"{s.seconds:.0f} s"
        return s.run, str(s.config.get("name", "?")), s.status, cells, started, wall


def grid_size(config: dict) -> int | None:
    """How many cells ``config`` (as a run stored it) expands to; None when it does not validate any more."""
    try:
        return len(expand_cells(parse_config(config, "stored config")))
    except (BackdoorlabError, ValueError):
        return None


def list_runs(store: str | Path | None = None, output_dir: str | Path = "runs") -> list[RunEntry]:
    """Every run in the store (``store``: a URL or SQLite path; default ``output_dir/results.sqlite``), newest
    first. Raises ConfigError when the store does not exist or cannot be reached."""
    with open_store(store, output_dir) as db:
        summaries = db.run_summaries()
    return [RunEntry(s, grid_size(s.config)) for s in summaries]


def format_runs(entries: list[RunEntry]) -> list[str]:
    """Aligned text lines: a header, then one line per run."""
    table = [HEADER, *(e.fields() for e in entries)]
    widths = [max(len(row[i]) for row in table) for i in range(len(HEADER))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in table]
