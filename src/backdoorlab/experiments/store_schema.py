"""The results store's tables, as SQLAlchemy Core objects, the same on SQLite and PostgreSQL.

``results`` (one measured figure a row), ``cells`` (the cells of a run committed), ``runs`` (config, status, code
fingerprint, times), ``settings`` (what the report says of each dataset x model setting) and ``failures`` (cells
that failed or were skipped). Times are ISO-8601 UTC text, JSON documents are text, as in the first SQLite schema,
so that databases written before this module open unchanged. A database that lacks a table or a nullable column
gains it when opened (:func:`create_or_upgrade`).

Rows come back in the order they were written: SQLite's ``rowid`` gives it; on PostgreSQL, ``results`` and
``failures`` carry one more column, ``seq`` (an identity), renewed whenever a row is replaced, as SQLite's
``INSERT OR REPLACE`` renews the rowid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import (
    BigInteger,
    Column,
    ColumnElement,
    Connection,
    Float,
    Identity,
    Integer,
    MetaData,
    Table,
    Text,
    inspect,
    literal_column,
    text,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

# A fixed key for PostgreSQL's advisory lock: two processes that create the tables at once take turns.
_SCHEMA_LOCK = 0x6B6C61625F737472  # "klab_str"


@dataclass(frozen=True)
class Tables:
    """The store's tables for one database dialect (``sqlite`` or ``postgresql``)."""

    metadata: MetaData
    results: Table
    cells: Table
    runs: Table
    settings: Table
    failures: Table
    dialect: str

    def write_order(self, table: Table) -> ColumnElement:
        """The column that orders ``table``'s rows as written (``results`` and ``failures``)."""
        return literal_column("rowid") if self.dialect == "sqlite" else table.c.seq


def build_tables(dialect: str) -> Tables:
    """The tables for ``dialect`` (``sqlite``, ``postgresql``)."""
    md = MetaData()

    def order() -> list[Column]:
        return [] if dialect == "sqlite" else [Column("seq", BigInteger, Identity(), nullable=False)]

    def key(name: str, kind=Text) -> Column:
        return Column(name, kind, primary_key=True, nullable=False)

    results = Table(
        "results",
        md,
        *(key(c) for c in ("run", "dataset", "model", "attack", "defense")),
        key("seed", Integer),
        key("metric"),
        Column("value", Float),
        Column("created", Text, nullable=False),
        *order(),
    )
    cells = Table(
        "cells", md, key("run"), key("cell"), Column("seconds", Float), Column("finished", Text, nullable=False)
    )
    runs = Table(
        "runs",
        md,
        key("run"),
        Column("config", Text, nullable=False),
        Column("started", Text, nullable=False),
        Column("finished", Text),
        Column("status", Text, nullable=False),
        Column("version", Text),
        Column("source_hash", Text),
        Column("git_commit", Text),
        Column("seconds", Float),
        Column("stage_seconds", Text),
    )
    settings = Table(
        "settings",
        md,
        key("run"),
        key("setting", Integer),
        *(Column(c, Text, nullable=False) for c in ("dataset", "model", "summary", "classes", "input_shape")),
    )
    failures = Table(
        "failures",
        md,
        key("run"),
        key("cell"),
        *(Column(c, Text, nullable=False) for c in ("status", "error")),
        Column("traceback_file", Text),
        Column("seconds", Float),
        Column("created", Text, nullable=False),
        *order(),
    )
    return Tables(md, results, cells, runs, settings, failures, dialect)


def create_or_upgrade(conn: Connection, tables: Tables) -> None:
    """Create the missing tables and add the missing nullable columns (a database written by an older version), in
    the caller's transaction; on PostgreSQL under an advisory lock, so that concurrent openers do not collide."""
    if tables.dialect == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK})
    tables.metadata.create_all(conn)
    inspector = inspect(conn)
    for table in tables.metadata.sorted_tables:
        have = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name not in have and column.nullable:
                kind = column.type.compile(dialect=conn.dialect)
                conn.execute(text(f"ALTER TABLE {table.name} ADD COLUMN {column.name} {kind}"))


def upsert(conn: Connection, table: Table, rows: Sequence[dict], keep: Sequence[str] | None = None) -> None:
    """Insert ``rows`` (dicts of column values); a row whose key exists is replaced whole (SQLite's ``INSERT OR
    REPLACE``), or, with ``keep``, has its given columns updated except those in ``keep``."""
    if not rows:
        return
    dialect = conn.dialect.name
    if dialect == "sqlite" and keep is None:
        conn.execute(table.insert().prefix_with("OR REPLACE"), list(rows))
        return
    stmt = (pg_insert if dialect == "postgresql" else sqlite_insert)(table)
    key = {c.name for c in table.primary_key}
    named = [c.name for c in table.columns] if keep is None else list(rows[0])
    update: dict = {c: stmt.excluded[c] for c in named if c not in key and c != "seq" and c not in (keep or ())}
    if keep is None and "seq" in table.c:
        update["seq"] = literal_column("DEFAULT")
    conn.execute(stmt.on_conflict_do_update(index_elements=sorted(key), set_=update), list(rows))
