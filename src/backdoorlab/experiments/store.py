"""The results store: one table of rows (run, dataset, model, attack, defense, seed, metric, value).

Beside the rows: each run's config, status, code fingerprint and times (``runs``), the cells it finished
(``cells``), and what the report says of each (dataset, model) setting (``settings``: the dataset's summary, class
names and input shape), so that a report is built from the store alone, without loading a dataset or a model.
The store is a SQLite file (the default, WAL mode) or a PostgreSQL database that runs on many machines share, chosen
by URL (:mod:`.store_url`); one implementation over SQLAlchemy Core serves both (tables: :mod:`.store_schema`).
One transaction per batch of rows, so a killed run loses at most the cell it was computing. A database written
before a table or column existed opens as it is: what is missing is added.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import URL, func, select
from sqlalchemy.exc import DBAPIError

from ..errors import ConfigError
from .store_schema import build_tables, create_or_upgrade, upsert
from .store_url import describe, make_engine, sqlite_path, store_url


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


@dataclass(frozen=True)
class RunSummary:
    """One run as ``backdoorlab runs`` lists it: its name, ``config`` (the config it ran, as stored), ``status``
    (``running``, ``finished``, ``incomplete``), start and finish times (ISO-8601 UTC; ``finished`` None while
    running), wall ``seconds`` (None until it finishes computing), and the cells committed and failed so far."""

    run: str
    config: dict
    status: str
    started: str
    finished: str | None
    seconds: float | None
    cells_done: int
    cells_failed: int


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class ResultsStore:
    """The results database at ``location``: a SQLite path (``runs/results.sqlite`` by default; created on first
    use) or a store URL (``sqlite:///PATH``, ``postgresql://USER@HOST/DATABASE``: see :mod:`.store_url`). Every
    method is one transaction. Raises ConfigError when the URL is malformed or the server cannot be reached."""

    def __init__(self, location: str | Path | URL) -> None:
        self.url = location if isinstance(location, URL) else store_url(location)
        self._engine = make_engine(self.url)
        self._t = build_tables(self._engine.dialect.name)
        try:
            with self._engine.begin() as conn:
                create_or_upgrade(conn, self._t)
        except DBAPIError as err:
            self._engine.dispose()
            raise ConfigError(f"cannot open the results store {describe(self.url)}: {_first_line(err)}") from None

    def __str__(self) -> str:
        return describe(self.url)

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start_run(self, run: str, config: dict) -> None:
        row = {"run": run, "config": json.dumps(config), "started": _now(), "finished": None, "status": "running"}
        with self._engine.begin() as conn:
            upsert(conn, self._t.runs, [row])

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
        values: dict = {"finished": _now(), "status": status}
        if seconds is not None:
            values |= {"seconds": seconds, "stage_seconds": json.dumps(stage_seconds or {})}
        runs = self._t.runs
        with self._engine.begin() as conn:
            conn.execute(runs.update().where(runs.c.run == run).values(**values))

    def add(self, rows: Iterable[ResultRow]) -> None:
        """Insert (or replace) rows in one transaction."""
        now = _now()
        with self._engine.begin() as conn:
            upsert(conn, self._t.results, [asdict(r) | {"created": now} for r in rows])

    def commit_cell(self, run: str, cell: str, rows: Iterable[ResultRow], seconds: float) -> None:
        """Write a cell's rows and mark it finished, in one transaction: a cell is stored whole or not at all."""
        now = _now()
        failures = self._t.failures
        with self._engine.begin() as conn:
            upsert(conn, self._t.results, [asdict(r) | {"created": now} for r in rows])
            upsert(conn, self._t.cells, [{"run": run, "cell": cell, "seconds": seconds, "finished": now}])
            conn.execute(failures.delete().where(failures.c.run == run, failures.c.cell == cell))

    def record_failure(self, run: str, failure: CellFailure) -> None:
        """Record a cell that failed or was skipped (a resumed run tries it again; its success clears this)."""
        with self._engine.begin() as conn:
            upsert(conn, self._t.failures, [{"run": run, **asdict(failure), "created": _now()}])

    def failures(self, run: str) -> list[CellFailure]:
        """The cells of ``run`` that failed or were skipped and have not succeeded since, in the order recorded."""
        f = self._t.failures
        query = select(f.c.cell, f.c.status, f.c.error, f.c.traceback_file, f.c.seconds).where(f.c.run == run)
        return [CellFailure(*row) for row in self._all(query.order_by(self._t.write_order(f)))]

    def finished_cells(self, run: str) -> dict[str, float]:
        """{cell id: seconds} of the cells of ``run`` already committed."""
        c = self._t.cells
        return dict(self._all(select(c.c.cell, c.c.seconds).where(c.c.run == run)))

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
        row = {
            "run": run,
            "config": json.dumps(config),
            "started": _now(),
            "finished": None,
            "status": "running",
            "version": code.version,
            "source_hash": code.source_hash,
            "git_commit": code.commit,
        }
        infos = [
            asdict(s) | {"run": run, "classes": json.dumps(list(s.classes)), "input_shape": json.dumps(s.input_shape)}
            for s in settings
        ]
        with self._engine.begin() as conn:
            upsert(conn, self._t.runs, [row], keep=("started", "finished"))
            upsert(conn, self._t.settings, infos)

    def run_code(self, run: str) -> RunCode | None:
        """The code recorded for ``run`` (fields None where an older version did not record them); None: no run."""
        r = self._t.runs
        row = self._one(select(r.c.version, r.c.source_hash, r.c.git_commit).where(r.c.run == run))
        return RunCode(*row) if row else None

    def settings(self, run: str) -> list[SettingInfo]:
        """The settings recorded for ``run``, by index (empty for a run recorded before settings were)."""
        s = self._t.settings
        query = select(s.c.setting, s.c.dataset, s.c.model, s.c.summary, s.c.classes, s.c.input_shape)
        return [
            SettingInfo(i, d, m, summary, tuple(json.loads(classes)), tuple(json.loads(shape)))
            for i, d, m, summary, classes, shape in self._all(query.where(s.c.run == run).order_by(s.c.setting))
        ]

    def run_times(self, run: str) -> tuple[float | None, dict[str, float]]:
        """(wall seconds, seconds per phase) recorded when ``run`` last finished computing; (None, {}) if never."""
        r = self._t.runs
        row = self._one(select(r.c.seconds, r.c.stage_seconds).where(r.c.run == run))
        if row is None or row[0] is None:
            return None, {}
        return float(row[0]), json.loads(row[1] or "{}")

    def rows(self, run: str) -> list[ResultRow]:
        """Every row of ``run``, in the order written."""
        t = self._t.results
        columns = [t.c[name] for name in ResultRow.__dataclass_fields__]
        query = select(*columns).where(t.c.run == run).order_by(self._t.write_order(t))
        return [ResultRow(*r) for r in self._all(query)]

    def run_config(self, run: str) -> dict | None:
        r = self._t.runs
        row = self._one(select(r.c.config).where(r.c.run == run))
        return json.loads(row[0]) if row else None

    def runs(self) -> list[tuple[str, str, str]]:
        """(run, started, status) of every run, newest first."""
        r = self._t.runs
        return [tuple(row) for row in self._all(select(r.c.run, r.c.started, r.c.status).order_by(*_newest(r)))]

    def run_summaries(self) -> list[RunSummary]:
        """Every run with its cell counts, newest first (one query)."""
        r, c, f = self._t.runs, self._t.cells, self._t.failures
        done = select(func.count()).select_from(c).where(c.c.run == r.c.run).scalar_subquery()
        failed = select(func.count()).select_from(f).where(f.c.run == r.c.run, f.c.status == "failed").scalar_subquery()
        query = select(r.c.run, r.c.config, r.c.status, r.c.started, r.c.finished, r.c.seconds, done, failed)
        return [
            RunSummary(run, json.loads(config), *rest) for run, config, *rest in self._all(query.order_by(*_newest(r)))
        ]

    def _all(self, query) -> list:
        with self._engine.connect() as conn:
            return list(conn.execute(query).all())

    def _one(self, query):
        with self._engine.connect() as conn:
            return conn.execute(query).first()


def _newest(runs) -> tuple:
    return runs.c.started.desc(), runs.c.run


def _first_line(err: DBAPIError) -> str:
    """The driver's message, first line (``connection refused``, ``database "x" does not exist``)."""
    text = str(err.orig if err.orig is not None else err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def open_store(store: str | Path | URL | None, output_dir: str | Path = "runs") -> ResultsStore:
    """An existing store to read: ``store`` (a URL or SQLite path), or ``output_dir/results.sqlite`` when None.
    Raises ConfigError, creating nothing, when that SQLite file does not exist."""
    url = store if isinstance(store, URL) else store_url(store, output_dir)
    path = sqlite_path(url)
    if path is not None and not path.is_file():
        raise ConfigError(f"{path}: no results database (run `backdoorlab run` first, or pass --output or --store)")
    return ResultsStore(url)
