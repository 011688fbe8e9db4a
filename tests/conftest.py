"""Shared fixtures: real databases (SQLite file and PostgreSQL), settings, trace paths."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from pbx_bridge.config import Settings
from pbx_bridge.db import migrate
from pbx_bridge.db.engine import make_engine

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("PBX_BRIDGE_SHARED", ROOT.parent / "shared"))
TRACES = SHARED / "ami-traces"
PG_ADMIN_URL = os.environ.get("PBX_BRIDGE_TEST_PG", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
# Fixtures of real CEL databases (PostgreSQL, MariaDB) for the CEL tests.
pytest_plugins = ["tests.cel_support"]


def _pg_url(dbname: str) -> str:
    return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + dbname


async def _pg_admin(statement: str) -> None:
    engine = create_async_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(sa.text(statement))
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """One PostgreSQL database for the test run, migrated; dropped at the end."""
    name = f"pbx_bridge_test_{uuid.uuid4().hex[:10]}"
    try:
        asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    except (OSError, sa.exc.DBAPIError) as exc:
        if os.environ.get("PBX_TEST_REQUIRE_POSTGRES"):  # CI (.ci/run): no quiet skipping
            pytest.fail(f"no PostgreSQL at {PG_ADMIN_URL}: {exc}", pytrace=False)
        pytest.skip(f"no PostgreSQL at {PG_ADMIN_URL}: {exc}")
    url = _pg_url(name)

    async def up() -> None:
        engine = make_engine(url)
        await migrate.upgrade(engine)
        await engine.dispose()

    asyncio.run(up())
    yield url
    asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _truncate_all(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        names = await conn.run_sync(lambda c: sa.inspect(c).get_table_names())
        names = [n for n in names if n != "alembic_version"]
        if names:
            quoted = ", ".join(f'"{n}"' for n in names)
            await conn.execute(sa.text(f"TRUNCATE {quoted} RESTART IDENTITY CASCADE"))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty database URL: a SQLite file, or the run's PostgreSQL database emptied."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'test.sqlite3'}"

        async def up() -> None:
            engine = make_engine(url)
            await migrate.upgrade(engine)
            await engine.dispose()

        asyncio.run(up())
        return url
    url = request.getfixturevalue("pg_database")

    async def empty() -> None:
        engine = make_engine(url)
        await _truncate_all(engine)
        await engine.dispose()

    asyncio.run(empty())
    return url


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    eng = make_engine(db_url)
    yield eng
    await eng.dispose()


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    s = Settings()
    s.server.data_dir = str(tmp_path / "var")
    s.database.url = db_url
    return s


@pytest.fixture
def traces() -> Path:
    if not TRACES.is_dir():
        pytest.fail(f"AMI traces not found at {TRACES} (set PBX_BRIDGE_SHARED)")
    return TRACES
