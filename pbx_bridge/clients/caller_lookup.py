"""Caller lookups on the latency-critical paths: the routing endpoint and the screen pop.

On SQLite the async driver runs every step of a query in its own thread (cursor, execute, fetch,
close, rollback: five hand-offs), which on a busy machine costs far more than the indexed read
itself. Here the read is done in place on a plain synchronous connection to the same file (WAL:
readers never wait for the writer), with a short lock timeout; if the database is locked
anyway, the lookup falls back to the async engine. PostgreSQL uses the async engine directly.
"""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from crm_sync.cards import CardSummary, card_summary, card_summary_sync
from crm_sync.matching import Match, MatchSettings, match_number, match_number_sync

log = logging.getLogger("pbx_bridge.clients.caller_lookup")
# Longest the event loop may wait on a SQLite lock before the lookup goes the async way.
LOCK_WAIT_SECONDS = 0.05


class CallerLookup:
    def __init__(self, engine: AsyncEngine, settings: MatchSettings) -> None:
        self.engine = engine
        self.settings = settings
        self._sync: sa.engine.Engine | None = None
        if engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:"):
            self._sync = sa.create_engine(
                engine.url.set(drivername="sqlite"),
                connect_args={"timeout": LOCK_WAIT_SECONDS, "check_same_thread": False},
                pool_size=1,
                max_overflow=0,
            )
            sa.event.listen(self._sync, "connect", _read_only)

    async def match(self, number: str | None) -> Match:
        if self._sync is not None:
            try:
                with self._sync.connect() as conn:
                    return match_number_sync(conn, number, self.settings)
            except sa.exc.OperationalError:
                log.debug("caller lookup: SQLite busy, using the async engine")
        async with self.engine.connect() as conn:
            return await match_number(conn, number, self.settings)

    async def screen_pop(self, number: str | None) -> tuple[Match, CardSummary | None]:
        """The match and, when there is a card, the summary the operator's screen shows."""
        if self._sync is not None:
            try:
                with self._sync.connect() as conn:
                    match = match_number_sync(conn, number, self.settings)
                    if match.client is None:
                        return match, None
                    return match, card_summary_sync(conn, match.client, ambiguous=match.ambiguous)
            except sa.exc.OperationalError:
                log.debug("screen pop: SQLite busy, using the async engine")
        async with self.engine.connect() as conn:
            match = await match_number(conn, number, self.settings)
            if match.client is None:
                return match, None
            return match, await card_summary(conn, match.client, ambiguous=match.ambiguous)

    def close(self) -> None:
        if self._sync is not None:
            self._sync.dispose()


def _read_only(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA query_only=ON")
    cursor.close()
