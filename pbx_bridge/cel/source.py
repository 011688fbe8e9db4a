"""A PBX's CEL table, read (and only read) over an async SQLAlchemy connection: PostgreSQL as
cel_pgsql writes it, MySQL/MariaDB as FreePBX's cel_odbc writes it (`asteriskcdrdb.cel`).

The source never raises into the live path: a database that is down or a table that is not
there sets `state` ("down" / "misconfigured") with the reason in `last_error`, logged once per
change of state; the callers skip the sweep and try again later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from pbx_bridge.cel.grouping import missing_channels
from pbx_bridge.cel.rows import COLUMNS, CelRow, CelRowError, epoch, rows_from_tuples, zone
from pbx_bridge.log import event

log = logging.getLogger("pbx_bridge.cel")

SourceState = Literal["idle", "ok", "down", "misconfigured"]
CHUNK = 500  # ids per IN (...) list
# Rounds of fetching the rows of channels a call's rows name but lack (a pickup's phone began
# as a call of its own); one is all the real cases need.
CLOSURE_ROUNDS = 3


class CelUnavailable(Exception):
    """The CEL database could not be read (the state says why)."""


@dataclass
class CelDescription:
    """What `pbx-bridge cel check` prints."""

    columns: list[str]
    newest: datetime | None
    rows_last_day: int
    event_types: dict[str, int]
    applications: dict[str, int]
    indexed: list[str]
    warnings: list[str] = field(default_factory=list)


def _split_table(name: str) -> tuple[str | None, str]:
    schema, _, table = name.rpartition(".")
    return (schema or None), table


def _engine(url: str, timeout: float) -> AsyncEngine:
    parsed = sa.engine.make_url(url)
    connect_args: dict[str, Any]
    if parsed.get_backend_name() == "postgresql":
        # Read-only at the session level: a bug here can never write into Asterisk's table.
        connect_args = {"timeout": timeout, "server_settings": {
            "default_transaction_read_only": "on", "application_name": "pbx-bridge-cel"}}
    else:
        connect_args = {"connect_timeout": int(max(1, timeout)),
                        "init_command": "SET SESSION TRANSACTION READ ONLY"}
    return create_async_engine(parsed, pool_pre_ping=True, pool_size=2, max_overflow=2,
                               connect_args=connect_args)


class CelSource:
    def __init__(self, pbx: str, url: str, table: str = "cel", timezone: str = "UTC", *,
                 query_timeout: float = 30.0) -> None:
        self.pbx = pbx
        self.url = url
        self.table_name = table
        self.tz: tzinfo = zone(timezone)
        self.query_timeout = query_timeout
        self.state: SourceState = "idle"
        self.last_error = ""
        self.last_ok_at: float | None = None
        self.rows_read = 0
        self.bad_rows = 0
        self._engine: AsyncEngine | None = None
        self._table: sa.TableClause | None = None
        self._aware = False  # eventtime carries its zone (PostgreSQL timestamptz)
        self._has_id = False

    # --- life -------------------------------------------------------------------------------

    async def close(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None
        self._table = None

    def _set(self, state: SourceState, error: str = "") -> None:
        if state != self.state or (error and error != self.last_error):
            level = logging.INFO if state == "ok" else logging.ERROR
            event(log, level, "cel.source_" + state, pbx=self.pbx, table=self.table_name,
                  **({"error": error} if error else {}))
        self.state = state
        self.last_error = error
        if state == "ok":
            self.last_ok_at = time.time()

    async def _open(self) -> sa.TableClause:
        if self._table is not None:
            return self._table
        if self._engine is None:
            self._engine = _engine(self.url, self.query_timeout)
        schema, name = _split_table(self.table_name)

        def reflect(conn: sa.Connection) -> list[dict[str, Any]]:
            return [dict(c) for c in sa.inspect(conn).get_columns(name, schema=schema)]

        try:
            async with self._engine.connect() as conn:
                columns = await conn.run_sync(reflect)
        except sa.exc.NoSuchTableError:
            raise self._fail("misconfigured", f"no table {self.table_name!r}") from None
        found = {c["name"].lower(): c for c in columns}
        missing = [c for c in COLUMNS if c not in found]
        if missing:
            raise self._fail("misconfigured", f"table {self.table_name!r} lacks the CEL columns "
                             + ", ".join(missing))
        eventtime_type = found["eventtime"]["type"]
        self._aware = bool(getattr(eventtime_type, "timezone", False))
        self._has_id = "id" in found
        names = [c for c in (*COLUMNS, "id") if c in found]
        self._table = sa.table(name, *(sa.column(c) for c in names), schema=schema)
        return self._table

    def _fail(self, state: SourceState, error: str) -> CelUnavailable:
        self._set(state, error)
        return CelUnavailable(error)

    @contextlib.asynccontextmanager
    async def _guarded(self) -> AsyncIterator[None]:
        """Database errors become the source's state (and CelUnavailable), never a traceback."""
        try:
            yield
        except CelUnavailable:
            raise
        except (OSError, TimeoutError, sa.exc.SQLAlchemyError) as exc:
            text = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
            if isinstance(exc, sa.exc.ProgrammingError):
                self._table = None  # the table changed under us: reflect again next time
                raise self._fail("misconfigured", text) from None
            raise self._fail("down", text) from None
        self._set("ok")

    async def _fetch(self, build: Any) -> list[Any]:
        """Run one query (built from the table) under the query timeout; the state follows.
        Plain tuples, in the select's column order (fast: the backfill reads millions)."""
        async with self._guarded():
            table = await self._open()
            assert self._engine is not None
            async with self._engine.connect() as conn:
                result = await asyncio.wait_for(conn.execute(build(table)), self.query_timeout)
                rows = result.all()
        return list(rows)

    # --- time -----------------------------------------------------------------------------

    def _bind(self, when: datetime) -> datetime:
        """A UTC time as the eventtime column holds it (naive in the PBX's zone, or aware)."""
        if self._aware:
            return when
        return when.astimezone(self.tz).replace(tzinfo=None)

    def _rows(self, tuples: Iterable[Any]) -> list[CelRow]:
        assert self._table is not None
        out, bad = rows_from_tuples([c.name for c in self._table.columns], tuples, self.tz)
        self.bad_rows += bad  # one broken row must not cost the call its other rows
        self.rows_read += len(out)
        return out

    # --- queries --------------------------------------------------------------------------

    async def ended_between(self, since: datetime, until: datetime | None = None,
                            ) -> list[tuple[str, float]]:
        """(Linkedid, end time) of the calls whose LINKEDID_END is in [since, until)."""
        lo = self._bind(since)
        hi = self._bind(until) if until is not None else None

        def build(t: sa.TableClause) -> Any:
            q = sa.select(t.c.linkedid, t.c.eventtime).where(
                t.c.eventtype == "LINKEDID_END", t.c.eventtime >= lo)
            if hi is not None:
                q = q.where(t.c.eventtime < hi)
            return q.order_by(t.c.eventtime)

        out = []
        for linkedid, when in await self._fetch(build):
            try:
                out.append((str(linkedid), epoch(when, self.tz)))
            except CelRowError:
                self.bad_rows += 1
        return out

    async def rows_for_linkedids(self, linkedids: Sequence[str]) -> list[CelRow]:
        return await self._rows_where("linkedid", linkedids)

    async def rows_for_uniqueids(self, uniqueids: Sequence[str]) -> list[CelRow]:
        return await self._rows_where("uniqueid", uniqueids)

    async def _rows_where(self, column: str, values: Sequence[str]) -> list[CelRow]:
        """Rows whose column is one of the values (unordered: the grouping sorts them). On
        PostgreSQL one array parameter (`= ANY`): one plan for every batch, however long."""
        postgres = self.url.startswith("postgresql")
        size = CHUNK * 10 if postgres else CHUNK
        rows: list[CelRow] = []
        for start in range(0, len(values), size):
            chunk = list(values[start:start + size])

            def build(t: sa.TableClause, chunk: list[str] = chunk) -> Any:
                if postgres:
                    array = sa.bindparam("values", chunk, type_=ARRAY(sa.String))
                    return sa.select(t).where(t.c[column] == sa.any_(array))
                return sa.select(t).where(t.c[column].in_(chunk))

            rows += self._rows(await self._fetch(build))
        return rows

    async def call_rows(self, linkedids: Sequence[str]) -> list[CelRow]:
        """Every row of these calls, and of the channels they name whose rows were written under
        another Linkedid (a pickup's phone began as a call of its own), with those calls' rows."""
        rows = await self.rows_for_linkedids(linkedids)
        have = {_key(r) for r in rows}
        seen_links = set(linkedids)
        seen_uids: set[str] = set()
        for _ in range(CLOSURE_ROUNDS):
            wanted = sorted(missing_channels(rows) - seen_uids)
            if not wanted:
                break
            seen_uids.update(wanted)
            found = await self.rows_for_uniqueids(wanted)
            more = sorted({r.linkedid for r in found} - seen_links)
            seen_links.update(more)
            if more:
                found += await self.rows_for_linkedids(more)
            for row in found:
                if _key(row) not in have:
                    have.add(_key(row))
                    rows.append(row)
        return rows

    # --- cel check --------------------------------------------------------------------------

    async def describe(self) -> CelDescription:
        async with self._guarded():
            return await self._describe()

    async def _describe(self) -> CelDescription:
        table = await self._open()
        assert self._engine is not None
        schema, name = _split_table(self.table_name)

        def inspect(conn: sa.Connection) -> tuple[list[str], list[str]]:
            insp = sa.inspect(conn)
            cols = [c["name"] for c in insp.get_columns(name, schema=schema)]
            indexed = {str(ix["column_names"][0]) for ix in insp.get_indexes(name, schema=schema)
                       if ix.get("column_names")}
            pk = insp.get_pk_constraint(name, schema=schema).get("constrained_columns") or []
            return cols, sorted(indexed | set(pk[:1]))

        async with self._engine.connect() as conn:
            columns, indexed = await conn.run_sync(inspect)
            newest_raw = (await conn.execute(sa.select(sa.func.max(table.c.eventtime)))).scalar()
            newest = None
            types: dict[str, int] = {}
            apps: dict[str, int] = {}
            rows_last_day = 0
            if newest_raw is not None:
                newest = datetime.fromtimestamp(epoch(newest_raw, self.tz), UTC)
                lo = newest_raw - timedelta(days=1)
                result = await conn.execute(
                    sa.select(table.c.eventtype, sa.func.count()).where(table.c.eventtime > lo)
                    .group_by(table.c.eventtype))
                types = {str(k): int(v) for k, v in result}
                rows_last_day = sum(types.values())
                result = await conn.execute(
                    sa.select(table.c.appname, sa.func.count())
                    .where(table.c.eventtime > lo, table.c.eventtype == "APP_START")
                    .group_by(table.c.appname))
                apps = {str(k): int(v) for k, v in result}
        self._set("ok")
        warnings = []
        if newest is None:
            warnings.append("the table is empty: is CEL enabled (cel.conf enable = yes) and is "
                            "this the table cel_pgsql / cel_odbc writes?")
        else:
            if "LINKEDID_END" not in types:
                warnings.append("no LINKEDID_END rows in the last day: add LINKEDID_END to "
                                "cel.conf events (without it no call is known to be over)")
            for app in ("Dial", "Queue"):
                if app not in apps:
                    warnings.append(f"no APP_START of {app} in the last day: add "
                                    f"'apps = dial,queue' and APP_START to cel.conf (without it "
                                    f"who dialled whom is guessed)")
            skew = (newest - datetime.now(UTC)).total_seconds()
            if skew > 300:
                warnings.append(f"the newest row is {skew / 3600:.1f} h in the future: is "
                                "cel_timezone the zone Asterisk writes in?")
        for column in ("linkedid", "eventtime", "uniqueid"):
            if column not in indexed:
                warnings.append(f"no index on {column}: CREATE INDEX ON {self.table_name} "
                                f"({column}) makes the sweep and backfill fast")
        return CelDescription(columns, newest, rows_last_day, types, apps, indexed, warnings)


def _key(row: CelRow) -> tuple[str, str, float, int]:
    return (row.uniqueid, row.eventtype, row.eventtime, row.id)
