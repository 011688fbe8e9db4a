"""The simulated PBX's CEL table: the rows of every call it plays, written as cel_pgsql writes
them (UTC, microseconds), whether or not any AMI client listens, which is the point of CEL.

The traces carry the same data as `Event: CEL` messages (the lab had cel_manager on): each one
the simulator plays becomes a row, its time the event's `Timestamp`. The table is created when
missing, with the columns of shared notes `cel.md`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from pbx_bridge.ami.tasks import cancel_and_wait

log = logging.getLogger("pbx_bridge.simulator.cel")

FLUSH_SECONDS = 0.05
# AMI's AMAFlags words -> the number cel_pgsql stores.
AMA_FLAGS = {"OMIT": 1, "BILLING": 2, "DOCUMENTATION": 3}
# Table column <- AMI CEL header.
HEADER_OF = {
    "eventtype": "EventName", "userdeftype": "UserDefType", "cid_name": "CallerIDname",
    "cid_num": "CallerIDnum", "cid_ani": "CallerIDani", "cid_rdnis": "CallerIDrdnis",
    "cid_dnid": "CallerIDdnid", "exten": "Exten", "context": "Context", "channame": "Channel",
    "appname": "Application", "appdata": "AppData", "accountcode": "AccountCode",
    "peeraccount": "PeerAccount", "uniqueid": "UniqueID", "linkedid": "LinkedID",
    "userfield": "Userfield", "peer": "Peer", "extra": "Extra",
}


def cel_table(name: str = "cel", metadata: sa.MetaData | None = None) -> sa.Table:
    """The lab's table (shared notes `cel.md`), in Asterisk's column names."""
    def text(column: str, length: int) -> sa.Column[str]:
        return sa.Column(column, sa.String(length), nullable=False, server_default="")

    return sa.Table(
        name, metadata or sa.MetaData(),
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
                  autoincrement=True),
        sa.Column("eventtype", sa.String(30), nullable=False),
        sa.Column("eventtime", sa.DateTime(timezone=False).with_variant(
            mysql.DATETIME(fsp=6), "mysql"), nullable=False),
        text("userdeftype", 255), text("cid_name", 80), text("cid_num", 80), text("cid_ani", 80),
        text("cid_rdnis", 80), text("cid_dnid", 80), text("exten", 80), text("context", 80),
        text("channame", 80), text("appname", 80), text("appdata", 512),
        sa.Column("amaflags", sa.Integer, nullable=False, server_default="0"),
        text("accountcode", 80), text("peeraccount", 80), text("uniqueid", 150),
        text("linkedid", 150), text("userfield", 255), text("peer", 80), text("extra", 512),
    )


def row_from_headers(headers: Iterable[tuple[str, str]], shift: float = 0.0) -> dict[str, Any] | None:
    """An `Event: CEL` message's headers -> a row (None when it is no CEL event)."""
    h = dict(headers)
    if h.get("Event") != "CEL" or not h.get("UniqueID"):
        return None
    try:
        when = float(h.get("Timestamp", "")) + shift
    except ValueError:
        return None
    row: dict[str, Any] = {col: h.get(header, "") for col, header in HEADER_OF.items()}
    row["eventtime"] = datetime.fromtimestamp(when, UTC).replace(tzinfo=None)
    flags = h.get("AMAFlags", "")
    row["amaflags"] = AMA_FLAGS.get(flags, int(flags) if flags.isdigit() else 0)
    return row


def rows_from_text(text: str) -> list[dict[str, Any]]:
    """Rendered AMI messages (`\\r\\n` lines, a blank line after each) -> rows of the CEL ones."""
    rows = []
    for block in text.split("\r\n\r\n"):
        if not block.startswith("Event: CEL\r\n"):
            continue
        headers = []
        for line in block.split("\r\n"):
            key, sep, value = line.partition(": ")
            if sep:
                headers.append((key, value))
        row = row_from_headers(headers)
        if row is not None:
            rows.append(row)
    return rows


class CelWriter:
    def __init__(self, url: str, table: str = "cel") -> None:
        self.url = url
        self.table = cel_table(table)
        self.rows_written = 0
        self.errors = 0
        self._pending: list[dict[str, Any]] = []
        self._engine: AsyncEngine | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    async def start(self) -> None:
        self._engine = create_async_engine(self.url, pool_pre_ping=True)
        async with self._engine.begin() as conn:
            await conn.run_sync(lambda c: self.table.create(c, checkfirst=True))
        self._task = asyncio.get_running_loop().create_task(self._flusher(), name="simulator-cel")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
        with contextlib.suppress(OSError, sa.exc.SQLAlchemyError):
            await self.flush()
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None

    def offer(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            self._pending.extend(rows)
            self._wake.set()

    async def flush(self) -> None:
        """Write what is pending now (tests: before reading the table)."""
        rows, self._pending = self._pending, []
        if not rows or self._engine is None:
            return
        try:
            async with self._engine.begin() as conn:
                await conn.execute(sa.insert(self.table), rows)
        except BaseException:
            self._pending[:0] = rows  # kept for the next try, in order
            raise
        self.rows_written += len(rows)

    async def _flusher(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(FLUSH_SECONDS)  # one insert per burst of events
            try:
                await self.flush()
            except (OSError, sa.exc.SQLAlchemyError) as exc:
                self.errors += 1
                log.warning("simulator.cel_write_failed", extra={"kv": {"error": str(exc)[:200]}})
