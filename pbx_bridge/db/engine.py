"""Database engine and sessions: SQLite (WAL, foreign keys) by default, PostgreSQL when configured."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine


class DatabaseUrlError(Exception):
    pass


# The database holds call logs and customers' numbers: owner read-write, group read (backups run
# as the service's group), nobody else; SQLite gives its -wal and -shm files the database's mode.
SQLITE_FILE_MODE = 0o640
SQLITE_DIR_MODE = 0o750


def _create_private(path: Path) -> None:
    """Creates the SQLite file (and its directory) with private modes before SQLite does, which
    would use the process umask (0644 under the usual 022)."""
    if path.exists():
        return
    path.parent.mkdir(mode=SQLITE_DIR_MODE, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, SQLITE_FILE_MODE)
    os.fchmod(fd, SQLITE_FILE_MODE)
    os.close(fd)


def make_engine(url: str, *, echo: bool = False) -> AsyncEngine:
    """Create the async engine; for SQLite make the directory and set WAL and foreign keys."""
    try:
        parsed = sa.engine.make_url(url)
        parsed.port  # noqa: B018 - parsing the port validates it
    except (sa.exc.ArgumentError, ValueError) as exc:
        raise DatabaseUrlError(f"invalid database URL: {exc}") from None
    kwargs: dict[str, Any] = {"echo": echo}
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:" and not database.startswith("file:"):
            _create_private(Path(database))
        kwargs["connect_args"] = {"timeout": 30}
    elif parsed.get_backend_name() == "postgresql":
        kwargs["pool_pre_ping"] = True
        kwargs["pool_size"] = 10
    else:
        raise DatabaseUrlError(f"unsupported database backend {parsed.get_backend_name()!r}")
    engine = create_async_engine(parsed, **kwargs)
    if parsed.get_backend_name() == "sqlite":
        sa.event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets the HTTP readers run while the event consumer writes.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    # 64 MiB of page cache per connection (SQLite's default is 2 MiB): with a million calls the
    # number-search index (FTS5) and the random-order number indexes thrash a 2 MiB cache, and
    # writing a call cost 10x more (bench_ui's load: 430 -> 88 µs per call).
    cursor.execute("PRAGMA cache_size=-65536")
    cursor.close()


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[Any]:
    return async_sessionmaker(engine, expire_on_commit=False)


def is_sqlite(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "sqlite"
