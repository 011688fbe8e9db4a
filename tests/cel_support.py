"""Shared by the CEL tests: the real CEL rows of the traces (shared/ami-traces/cel/*.csv, and the
`Event: CEL` messages of every trace), and real CEL tables on PostgreSQL and MariaDB."""

from __future__ import annotations

import csv
import json
import os
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from pbx_bridge.cel.rows import CelRow, row_from_mapping, zone
from pbx_bridge.simulator.cel_writer import cel_table, row_from_headers
from pbx_bridge.simulator.trace import read_trace
from tests.conftest import PG_ADMIN_URL, TRACES

CEL_DIR = TRACES / "cel"
CSV_NAMES = sorted(p.stem for p in CEL_DIR.glob("*.csv"))
MYSQL_ADMIN_URL = os.environ.get("PBX_BRIDGE_TEST_MYSQL", "mysql+aiomysql://root@127.0.0.1:3306/")


def csv_mappings(name: str) -> list[dict[str, str]]:
    with open(CEL_DIR / f"{name}.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def numbered(mappings: list[dict[str, Any]]) -> list[CelRow]:
    """Table rows as CelRows, numbered as the table's id column would number them."""
    rows = [row_from_mapping(m, zone("UTC")) for m in mappings]
    for number, row in enumerate(rows, 1):
        row.id = number
    return rows


def csv_rows(name: str) -> list[CelRow]:
    """The CEL rows cel_pgsql wrote for the trace's calls (eventtime in UTC)."""
    return numbered(csv_mappings(name))


def trace_cel_mappings(name: str) -> list[dict[str, Any]]:
    """The trace's `Event: CEL` messages as table rows (the lab had cel_manager on too)."""
    out = []
    for frame in read_trace(TRACES / f"{name}.ami"):
        if frame.kind == "event" and frame.name == "CEL":
            row = row_from_headers(frame.headers)
            if row is not None:
                out.append(row)
    return out


def trace_cel_rows(name: str) -> list[CelRow]:
    return numbered(trace_cel_mappings(name))


def table_rows(mappings: list[dict[str, Any]], tz: str = "UTC") -> list[dict[str, Any]]:
    """CSV / trace rows as the table takes them: eventtime a naive datetime in `tz` (a PBX that
    writes local time), amaflags a number."""
    out = []
    for m in mappings:
        row = {k: v for k, v in m.items() if k != "id"}
        when = row["eventtime"]
        if isinstance(when, str):
            when = datetime.fromisoformat(when)
        if tz != "UTC":
            when = (when.replace(tzinfo=ZoneInfo("UTC")).astimezone(ZoneInfo(tz))).replace(tzinfo=None)
        row["eventtime"] = when
        row["amaflags"] = int(row.get("amaflags") or 0)
        out.append(row)
    return out


async def load_table(url: str, table: str, rows: list[dict[str, Any]]) -> None:
    engine = create_async_engine(url)
    try:
        t = cel_table(table)
        async with engine.begin() as conn:
            await conn.run_sync(lambda c: t.create(c, checkfirst=True))
            if rows:
                await conn.execute(sa.insert(t), rows)
    finally:
        await engine.dispose()


def unique_table() -> str:
    return f"cel_{uuid.uuid4().hex[:10]}"


def shifted(mappings: list[dict[str, Any]], seconds: float, prefix: str) -> list[dict[str, Any]]:
    """The same call later and with other ids (for filling tables with many calls)."""
    out = []
    for m in mappings:
        row = dict(m)
        when = row["eventtime"]
        if isinstance(when, str):
            when = datetime.fromisoformat(when)
        row["eventtime"] = when + timedelta(seconds=seconds)
        for key in ("uniqueid", "linkedid"):
            row[key] = prefix + row[key]
        if "_uniqueid" in (row.get("extra") or ""):
            extra = json.loads(row["extra"])
            row["extra"] = json.dumps({k: prefix + v if k.endswith("_uniqueid") else v
                                       for k, v in extra.items()})
        out.append(row)
    return out


async def _admin(url: str, statement: str) -> None:
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(sa.text(statement))
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def cel_pg_url() -> Iterator[str]:
    """A PostgreSQL database for CEL tables (as the PBX's cel_pgsql would have), dropped after."""
    import asyncio

    name = f"pbx_cel_{uuid.uuid4().hex[:10]}"
    try:
        asyncio.run(_admin(PG_ADMIN_URL, f'CREATE DATABASE "{name}"'))
    except (OSError, sa.exc.DBAPIError) as exc:
        pytest.fail(f"no PostgreSQL at {PG_ADMIN_URL} for the CEL tests: {exc}")
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    asyncio.run(_admin(PG_ADMIN_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def cel_mysql_url() -> Iterator[str]:
    """A MariaDB database for CEL tables (as FreePBX's asteriskcdrdb), dropped after. `make test`
    installs and starts Debian's mariadb-server when it is missing: no MariaDB is a failure."""
    import asyncio

    name = f"pbx_cel_{uuid.uuid4().hex[:10]}"
    try:
        asyncio.run(_admin(MYSQL_ADMIN_URL, f"CREATE DATABASE `{name}`"))
    except (OSError, sa.exc.DBAPIError) as exc:
        pytest.fail(f"no MariaDB at {MYSQL_ADMIN_URL} for the CEL tests (make test starts it): {exc}")
    yield MYSQL_ADMIN_URL.rstrip("/") + "/" + name
    asyncio.run(_admin(MYSQL_ADMIN_URL, f"DROP DATABASE IF EXISTS `{name}`"))


@pytest.fixture(params=["postgres", "mariadb"])
def cel_url(request: pytest.FixtureRequest) -> str:
    """A CEL database of each kind Asterisk writes CEL into."""
    return str(request.getfixturevalue("cel_pg_url" if request.param == "postgres" else "cel_mysql_url"))

