"""Database: migrations on SQLite and PostgreSQL match the tables the code declares."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.ext.asyncio import AsyncEngine

from pbx_bridge.all_tables import all_metadata
from pbx_bridge.calls.query import SEARCH_OBJECTS
from pbx_bridge.db import migrate
from pbx_bridge.db.engine import make_engine
from recordings.transcription.schema import FTS_OBJECTS as TRANSCRIPT_FTS

FTS_OBJECTS = TRANSCRIPT_FTS | SEARCH_OBJECTS

ROOT = Path(__file__).resolve().parent.parent


def _is_fts_object(difference: object) -> bool:
    """Full-text search objects exist only in the migration, per dialect (FTS5 virtual tables and
    their shadow tables on SQLite, a generated tsvector column and GIN indexes on PostgreSQL), so
    the comparison ignores exactly those by name."""
    if not isinstance(difference, tuple) or not difference:
        return False
    kind = difference[0]
    if kind == "remove_column":  # ("remove_column", schema, table name, Column)
        return difference[2] == "transcripts" and str(difference[3].name) in FTS_OBJECTS
    if kind in ("remove_table", "remove_index"):  # (kind, Table | Index)
        return str(difference[1].name) in FTS_OBJECTS
    return False


async def test_migrations_match_declared_tables(engine: AsyncEngine) -> None:
    assert await migrate.is_up_to_date(engine)

    def diff(conn: sa.engine.Connection) -> list[object]:
        ctx = MigrationContext.configure(conn, opts={"compare_type": False})
        return [d for d in compare_metadata(ctx, all_metadata()) if not _is_fts_object(d)]

    async with engine.connect() as conn:
        differences = await conn.run_sync(diff)
    assert differences == []


async def test_sqlite_pragmas(tmp_path: Path) -> None:
    eng = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'x.sqlite3'}")
    async with eng.connect() as conn:
        assert (await conn.execute(sa.text("PRAGMA journal_mode"))).scalar() == "wal"
        assert (await conn.execute(sa.text("PRAGMA foreign_keys"))).scalar() == 1
    await eng.dispose()


def test_serve_refuses_out_of_date_schema(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PBX_BRIDGE_")}
    env["PBX_BRIDGE_SERVER__DATA_DIR"] = str(tmp_path)
    result = subprocess.run([sys.executable, "-m", "pbx_bridge", "serve", "--port", "0"],
                            capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert result.returncode == 1
    assert "schema is out of date" in result.stderr
    up = subprocess.run([sys.executable, "-m", "pbx_bridge", "db", "upgrade"],
                        capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert up.returncode == 0, up.stderr
    cur = subprocess.run([sys.executable, "-m", "pbx_bridge", "db", "current"],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert cur.returncode == 0 and migrate.head_revision() in cur.stdout
