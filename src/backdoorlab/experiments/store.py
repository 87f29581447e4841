"""The results store: one SQLite table of rows (run, dataset, model, attack, defense, seed, metric, value).

WAL mode, one transaction per batch of rows, so a killed run loses at most the cell it was computing.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import astuple, dataclass
from datetime import UTC, datetime
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    run TEXT NOT NULL, dataset TEXT NOT NULL, model TEXT NOT NULL, attack TEXT NOT NULL,
    defense TEXT NOT NULL, seed INTEGER NOT NULL, metric TEXT NOT NULL, value REAL,
    created TEXT NOT NULL,
    PRIMARY KEY (run, dataset, model, attack, defense, seed, metric)
);
CREATE TABLE IF NOT EXISTS cells (
    run TEXT NOT NULL, cell TEXT NOT NULL, seconds REAL, finished TEXT NOT NULL, PRIMARY KEY (run, cell)
);
CREATE TABLE IF NOT EXISTS runs (
    run TEXT PRIMARY KEY, config TEXT NOT NULL, started TEXT NOT NULL, finished TEXT, status TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class ResultRow:
    """One measured figure. ``attack`` is ``none`` for the clean model, ``defense`` is ``none`` before defenses."""

    run: str
    dataset: str
    model: str
    attack: str
    defense: str
    seed: int
    metric: str
    value: float


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class ResultsStore:
    """SQLite results database at ``path`` (default ``runs/results.sqlite``); created on first use."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.path)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.executescript(SCHEMA)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start_run(self, run: str, config: dict) -> None:
        with self._conn:
            self._conn.execute(
                "INSERT OR REPLACE INTO runs VALUES (?, ?, ?, NULL, 'running')", (run, json.dumps(config), _now())
            )

    def finish_run(self, run: str, status: str = "finished") -> None:
        with self._conn:
            self._conn.execute("UPDATE runs SET finished = ?, status = ? WHERE run = ?", (_now(), status, run))

    def add(self, rows: Iterable[ResultRow]) -> None:
        """Insert (or replace) rows in one transaction."""
        now = _now()
        with self._conn:
            self._conn.executemany(
                "INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(*astuple(r), now) for r in rows],
            )

    def commit_cell(self, run: str, cell: str, rows: Iterable[ResultRow], seconds: float) -> None:
        """Write a cell's rows and mark it finished, in one transaction: a cell is stored whole or not at all."""
        now = _now()
        with self._conn:
            self._conn.executemany(
                "INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", [(*astuple(r), now) for r in rows]
            )
            self._conn.execute("INSERT OR REPLACE INTO cells VALUES (?, ?, ?, ?)", (run, cell, seconds, now))

    def finished_cells(self, run: str) -> dict[str, float]:
        """{cell id: seconds} of the cells of ``run`` already committed."""
        return dict(self._conn.execute("SELECT cell, seconds FROM cells WHERE run = ?", (run,)).fetchall())

    def start_or_resume(self, run: str, config: dict) -> None:
        """Record the run (a resumed run keeps its start time) and mark it running."""
        with self._conn:
            self._conn.execute(
                "INSERT INTO runs VALUES (?, ?, ?, NULL, 'running') ON CONFLICT(run) DO UPDATE SET status='running', "
                "config=excluded.config",
                (run, json.dumps(config), _now()),
            )

    def rows(self, run: str) -> list[ResultRow]:
        cur = self._conn.execute(
            "SELECT run, dataset, model, attack, defense, seed, metric, value FROM results WHERE run = ? "
            "ORDER BY rowid",
            (run,),
        )
        return [ResultRow(*r) for r in cur.fetchall()]

    def run_config(self, run: str) -> dict | None:
        row = self._conn.execute("SELECT config FROM runs WHERE run = ?", (run,)).fetchone()
        return json.loads(row[0]) if row else None

    def runs(self) -> list[tuple[str, str, str]]:
        """(run, started, status) of every run, newest first."""
        return self._conn.execute("SELECT run, started, status FROM runs ORDER BY started DESC").fetchall()
