"""The results store: one SQLite table of rows (run, dataset, model, attack, defense, seed, metric, value).

Beside the rows: each run's config, status, code fingerprint and times (``runs``), the cells it finished
(``cells``), and what the report says of each (dataset, model) setting (``settings``: the dataset's summary, class
names and input shape), so that a report is built from the store alone, without loading a dataset or a model.
WAL mode, one transaction per batch of rows, so a killed run loses at most the cell it was computing. A database
written before a table or column existed opens as it is: what is missing is added.
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
CREATE TABLE IF NOT EXISTS settings (
    run TEXT NOT NULL, setting INTEGER NOT NULL, dataset TEXT NOT NULL, model TEXT NOT NULL, summary TEXT NOT NULL,
    classes TEXT NOT NULL, input_shape TEXT NOT NULL, PRIMARY KEY (run, setting)
);
CREATE TABLE IF NOT EXISTS failures (
    run TEXT NOT NULL, cell TEXT NOT NULL, status TEXT NOT NULL, error TEXT NOT NULL, traceback_file TEXT,
    seconds REAL, created TEXT NOT NULL, PRIMARY KEY (run, cell)
);
"""
# Columns of ``runs`` added after its first version: (name, SQL type).
RUN_COLUMNS = (
    ("version", "TEXT"),
    ("source_hash", "TEXT"),
    ("git_commit", "TEXT"),
    ("seconds", "REAL"),
    ("stage_seconds", "TEXT"),
)


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


@dataclass(frozen=True)
class SettingInfo:
    """What the report says of one (dataset, model) setting of a run: ``setting`` (its index in the grid), the
    dataset's name as the rows give it, ``summary`` (``Dataset.summary()``), class names and input shape (C, H, W)."""

    setting: int
    dataset: str
    model: str
    summary: str
    classes: tuple[str, ...]
    input_shape: tuple[int, ...]


@dataclass(frozen=True)
class RunCode:
    """The code that computed a run: package ``version``, ``source_hash`` of the model-determining sources
    (see :mod:`~.fingerprint`) and the git ``commit`` (None when not run from a checkout); None where not recorded."""

    version: str | None
    source_hash: str | None
    commit: str | None


@dataclass(frozen=True)
class CellFailure:
    """A cell of a run that gave no rows: ``status`` ``failed`` (it raised: ``error`` is ``Type: message``,
    ``traceback_file`` the file under the run folder that holds the traceback) or ``skipped`` (a cell it depends on
    failed: ``error`` names it)."""

    cell: str
    status: str
    error: str
    traceback_file: str | None = None
    seconds: float | None = None


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
        self._add_missing_columns()

    def _add_missing_columns(self) -> None:
        have = {row[1] for row in self._conn.execute("PRAGMA table_info(runs)")}
        with self._conn:
            for name, kind in RUN_COLUMNS:
                if name not in have:
                    self._conn.execute(f"ALTER TABLE runs ADD COLUMN {name} {kind}")

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start_run(self, run: str, config: dict) -> None:
        with self._conn:
            self._conn.execute(
                "INSERT OR REPLACE INTO runs (run, config, started, finished, status) "
                "VALUES (?, ?, ?, NULL, 'running')",
                (run, json.dumps(config), _now()),
            )

    def finish_run(
        self,
        run: str,
        status: str = "finished",
        *,
        seconds: float | None = None,
        stage_seconds: dict[str, float] | None = None,
    ) -> None:
        """Mark ``run`` finished; ``seconds`` and ``stage_seconds`` (wall time, per phase), when given, replace the
        recorded ones (a resumed run that computed nothing keeps those of the run that did)."""
        with self._conn:
            self._conn.execute("UPDATE runs SET finished = ?, status = ? WHERE run = ?", (_now(), status, run))
            if seconds is not None:
                self._conn.execute(
                    "UPDATE runs SET seconds = ?, stage_seconds = ? WHERE run = ?",
                    (seconds, json.dumps(stage_seconds or {}), run),
                )

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
            self._conn.execute("DELETE FROM failures WHERE run = ? AND cell = ?", (run, cell))

    def record_failure(self, run: str, failure: CellFailure) -> None:
        """Record a cell that failed or was skipped (a resumed run tries it again; its success clears this)."""
        with self._conn:
            self._conn.execute(
                "INSERT OR REPLACE INTO failures VALUES (?, ?, ?, ?, ?, ?, ?)",
                (run, failure.cell, failure.status, failure.error, failure.traceback_file, failure.seconds, _now()),
            )

    def failures(self, run: str) -> list[CellFailure]:
        """The cells of ``run`` that failed or were skipped and have not succeeded since, in the order recorded."""
        cur = self._conn.execute(
            "SELECT cell, status, error, traceback_file, seconds FROM failures WHERE run = ? ORDER BY rowid", (run,)
        )
        return [CellFailure(*row) for row in cur.fetchall()]

    def finished_cells(self, run: str) -> dict[str, float]:
        """{cell id: seconds} of the cells of ``run`` already committed."""
        return dict(self._conn.execute("SELECT cell, seconds FROM cells WHERE run = ?", (run,)).fetchall())

    def start_or_resume(
        self,
        run: str,
        config: dict,
        code: RunCode | None = None,
        settings: Iterable[SettingInfo] = (),
    ) -> None:
        """Record the run (a resumed run keeps its start time), the ``code`` that computes it and its ``settings``,
        and mark it running, in one transaction."""
        code = code or RunCode(None, None, None)
        with self._conn:
            self._conn.execute(
                "INSERT INTO runs (run, config, started, finished, status, version, source_hash, git_commit) "
                "VALUES (?, ?, ?, NULL, 'running', ?, ?, ?) ON CONFLICT(run) DO UPDATE SET status='running', "
                "config=excluded.config, version=excluded.version, source_hash=excluded.source_hash, "
                "git_commit=excluded.git_commit",
                (run, json.dumps(config), _now(), code.version, code.source_hash, code.commit),
            )
            self._conn.executemany(
                "INSERT OR REPLACE INTO settings VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        run,
                        s.setting,
                        s.dataset,
                        s.model,
                        s.summary,
                        json.dumps(list(s.classes)),
                        json.dumps(s.input_shape),
                    )
                    for s in settings
                ],
            )

    def run_code(self, run: str) -> RunCode | None:
        """The code recorded for ``run`` (fields None where an older version did not record them); None: no run."""
        row = self._conn.execute("SELECT version, source_hash, git_commit FROM runs WHERE run = ?", (run,)).fetchone()
        return RunCode(*row) if row else None

    def settings(self, run: str) -> list[SettingInfo]:
        """The settings recorded for ``run``, by index (empty for a run recorded before settings were)."""
        cur = self._conn.execute(
            "SELECT setting, dataset, model, summary, classes, input_shape FROM settings WHERE run = ? "
            "ORDER BY setting",
            (run,),
        )
        return [
            SettingInfo(i, d, m, summary, tuple(json.loads(classes)), tuple(json.loads(shape)))
            for i, d, m, summary, classes, shape in cur.fetchall()
        ]

    def run_times(self, run: str) -> tuple[float | None, dict[str, float]]:
        """(wall seconds, seconds per phase) recorded when ``run`` last finished computing; (None, {}) if never."""
        row = self._conn.execute("SELECT seconds, stage_seconds FROM runs WHERE run = ?", (run,)).fetchone()
        if row is None or row[0] is None:
            return None, {}
        return float(row[0]), json.loads(row[1] or "{}")

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
