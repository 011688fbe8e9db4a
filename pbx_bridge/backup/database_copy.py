"""The database part of a backup, taken while `serve` runs, and put back by the restore.

- SQLite: the online backup API (`sqlite3.Connection.backup`) in one step: one read transaction,
  which in WAL mode never holds up the bridge's writers; the copy is one consistent moment.
- PostgreSQL: `pg_dump --format=custom --snapshot=...` of a snapshot exported by a REPEATABLE
  READ transaction that stays open while the recordings and transcripts are listed in it: the
  dump and the manifest describe the same moment. The restore is `pg_restore` into an empty
  database. pg_dump and pg_restore come with PostgreSQL's client package (postgresql-client)."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from pbx_bridge.backup.manifest import BackupError
from pbx_bridge.db.engine import make_engine

SQLITE_FILE = "pbx-bridge.sqlite3"
PG_DUMP_FILE = "database.pgdump"
T = TypeVar("T")


def sqlite_path(url: str) -> Path:
    database = sa.engine.make_url(url).database
    if not database or database == ":memory:":
        raise BackupError("an in-memory SQLite database cannot be backed up")
    return Path(database)


def libpq_url(url: str) -> str:
    """The SQLAlchemy URL as pg_dump and pg_restore take it (no +asyncpg)."""
    return sa.engine.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _sqlite_online_copy(source: Path, target: Path) -> None:
    if not source.is_file():
        raise BackupError(f"{source}: no such database file")
    src = sqlite3.connect(source, timeout=30)
    try:
        dst = sqlite3.connect(target)
        try:
            # pages=-1: one step, one read snapshot. Stepping page by page would restart from
            # the beginning at every write of the running bridge, and never finish under load.
            src.backup(dst, pages=-1)
        finally:
            dst.close()
    finally:
        src.close()


async def snapshot(url: str, target: Path,
                   read: Callable[[AsyncConnection], Awaitable[T]]) -> tuple[str, T]:
    """Copy the database into `target` (a new directory's file) and run `read` on that same
    moment. Returns the file name written and what `read` returned."""
    if sa.engine.make_url(url).get_backend_name() == "sqlite":
        copy = target / SQLITE_FILE
        await asyncio.to_thread(_sqlite_online_copy, sqlite_path(url), copy)
        engine = make_engine(f"sqlite+aiosqlite:///{copy}")
        try:
            async with engine.connect() as conn:
                return SQLITE_FILE, await read(conn)
        finally:
            await engine.dispose()
    return PG_DUMP_FILE, await _pg_snapshot(url, target / PG_DUMP_FILE, read)


async def _pg_snapshot(url: str, target: Path,
                       read: Callable[[AsyncConnection], Awaitable[T]]) -> T:
    pg_dump = _tool("pg_dump")
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="REPEATABLE READ")
            async with conn.begin():
                snapshot_id = (await conn.execute(sa.text("SELECT pg_export_snapshot()"))).scalar_one()
                proc = await asyncio.create_subprocess_exec(
                    pg_dump, "--format=custom", f"--snapshot={snapshot_id}", "--no-owner",
                    f"--file={target}", f"--dbname={libpq_url(url)}",
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
                result = await read(conn)  # while pg_dump reads the same snapshot
                _out, err = await proc.communicate()
                if proc.returncode != 0:
                    raise BackupError(f"pg_dump failed: {_last_line(err)}")
                return result
    finally:
        await engine.dispose()


async def restore_database(url: str, source: Path, kind: str) -> None:
    """Put the backed-up database where the configuration says, refusing to overwrite one."""
    backend = sa.engine.make_url(url).get_backend_name()
    if kind != backend:
        raise BackupError(f"the backup holds a {kind} database, the configuration says {backend}")
    if backend == "sqlite":
        target = sqlite_path(url)
        if target.exists():
            raise BackupError(f"{target} exists: restore only into an empty data directory "
                              "(move the old one aside)")
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".restoring")
        await asyncio.to_thread(shutil.copyfile, source / SQLITE_FILE, partial)
        partial.rename(target)
        return
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            tables = (await conn.execute(sa.text(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
            ))).scalar_one()
    finally:
        await engine.dispose()
    if tables:
        raise BackupError("the configured PostgreSQL database is not empty: restore only into "
                          "an empty database (createdb a new one)")
    proc = await asyncio.create_subprocess_exec(
        _tool("pg_restore"), "--no-owner", "--no-privileges", "--exit-on-error",
        f"--dbname={libpq_url(url)}", str(source / PG_DUMP_FILE),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _out, err = await proc.communicate()
    if proc.returncode != 0:
        raise BackupError(f"pg_restore failed: {_last_line(err)}")


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise BackupError(f"{name} not found: install PostgreSQL's client tools "
                          "(Debian: apt-get install postgresql-client)")
    return found


def _last_line(err: bytes) -> str:
    lines = [line for line in err.decode(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else "no message"
