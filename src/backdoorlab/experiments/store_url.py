"""Where the results store lives: a URL or a path, checked, then opened as an SQLAlchemy engine.

- a plain path, or ``sqlite:///PATH`` (relative) / ``sqlite:////PATH`` (absolute): a SQLite file in WAL mode; the
  default is ``<output folder>/results.sqlite``;
- ``postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE`` (also ``postgres://``, and ``?host=/socket/dir`` for a unix
  socket): a PostgreSQL database through psycopg 3 (``pip install 'backdoorlab[postgres]'``), which runs on many
  machines can write at once. ``postgresql+DRIVER://`` picks another SQLAlchemy driver.

The command line takes the URL from ``--store`` or the environment variable ``BACKDOORLAB_STORE``.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import URL, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from ..errors import ConfigError

ENV_VAR = "BACKDOORLAB_STORE"
DEFAULT_FILE = "results.sqlite"
BACKENDS = ("sqlite", "postgresql")
CONNECT_TIMEOUT = 10  # seconds before an unreachable server is an error (``?connect_timeout=N`` overrides)


def store_url(store: str | Path | None, output_dir: str | Path = "runs") -> URL:
    """The store's URL: ``store`` (a URL or a SQLite path), or ``output_dir/results.sqlite`` when None. Raises
    ConfigError (nothing opened, nothing written) on a URL that cannot be parsed or names another database."""
    if store is None or str(store).strip() == "":
        return URL.create("sqlite", database=str(Path(output_dir) / DEFAULT_FILE))
    text = str(store).strip()
    if "://" not in text:
        return URL.create("sqlite", database=text)
    try:
        url = make_url(text)
    except ArgumentError:
        raise ConfigError(f"cannot parse the store URL {text!r}; {_forms()}") from None
    backend = url.get_backend_name()
    if backend == "postgres":  # the short scheme many hosting services print
        url = url.set(drivername="postgresql")
        backend = "postgresql"
    if backend not in BACKENDS:
        raise ConfigError(f"unsupported store {backend!r} in {describe(url)}; {_forms()}")
    if backend == "sqlite" and not url.database:
        raise ConfigError(f"the SQLite store URL {text!r} names no file; {_forms()}")
    if backend == "postgresql" and url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    return url


def _forms() -> str:
    return "use a path, sqlite:///PATH or postgresql://USER@HOST[:PORT]/DATABASE"


def describe(url: URL) -> str:
    """The URL as shown to a user: the file path of a SQLite store, the URL without its password otherwise."""
    if url.get_backend_name() == "sqlite":
        return str(url.database)
    return url.set(drivername=url.get_backend_name()).render_as_string(hide_password=True)


def sqlite_path(url: URL) -> Path | None:
    """The file of a SQLite store; None for a server."""
    return Path(url.database) if url.get_backend_name() == "sqlite" and url.database else None


def make_engine(url: URL) -> Engine:
    """An engine for ``url``: SQLite in WAL mode (its folder created), or a server connection pool that checks a
    connection before using it and gives up connecting after :data:`CONNECT_TIMEOUT` seconds. Raises ConfigError
    when the database driver is not installed."""
    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url)
        event.listen(engine, "connect", _sqlite_wal)
        return engine
    connect = {} if "connect_timeout" in url.query else {"connect_timeout": CONNECT_TIMEOUT}
    try:
        return create_engine(url, pool_pre_ping=True, connect_args=connect)
    except ModuleNotFoundError as err:
        raise ConfigError(
            f"the PostgreSQL store needs the {err.name!r} driver: pip install 'backdoorlab[postgres]'"
        ) from None


def _sqlite_wal(dbapi_connection, _record) -> None:
    dbapi_connection.execute("PRAGMA journal_mode=WAL")
