"""Open live streams re-check their credential: a revoked token, a signed-out (or expired,
disabled) web session, or a role or extension that changed ends the stream.

A request is checked once, when it arrives; a WebSocket or SSE stream lives for hours. Every
`interval` seconds (the API's token cache time, so a stream ends no later than a new request would
be refused), one query for all open streams' tokens and one for all their sessions decide which
streams may go on: the cost does not grow with the number of clients. The session's idle clock is
not enforced here (an open live page is the operator at work); its absolute expiry is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

import sqlalchemy as sa
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from pbx_bridge.auth.schema import api_tokens
from pbx_bridge.bus import Subscription
from pbx_bridge.http.auth import Principal
from pbx_bridge.log import event as log_event
from pbx_bridge.web.schema import web_sessions, web_users

log = logging.getLogger("pbx_bridge.events")

# With a cache time of 0 (tests) the loop still sleeps this long between checks.
MIN_INTERVAL = 0.2
CredentialKind = Literal["token", "session"]


@dataclass(eq=False)
class Watched:
    """One open stream: who it was opened for, by which credential (a token's SHA-256 or the
    session's id), and its subscription, cut when the credential no longer holds."""

    principal: Principal
    kind: CredentialKind
    key: str
    sub: Subscription
    revoked: bool = field(default=False)

    def revoke(self) -> None:
        # Nothing queued is delivered after this: the queue is emptied and closed at once (the
        # sender holds no message across an await, so it sees the close marker next).
        self.revoked = True
        while not self.sub.queue.empty():
            self.sub.queue.get_nowait()
        self.sub.close()


def _same(before: Principal, role: str, extension: str | None) -> bool:
    return before.role == role and before.extension == extension


class StreamGuard:
    def __init__(self, engine: AsyncEngine, interval: float) -> None:
        self._engine = engine
        self.interval = max(interval, MIN_INTERVAL)
        self._open: set[Watched] = set()

    @contextlib.contextmanager
    def watch(self, principal: Principal, kind: CredentialKind, key: str,
              sub: Subscription) -> Iterator[Watched]:
        watched = Watched(principal, kind, key, sub)
        self._open.add(watched)
        try:
            yield watched
        finally:
            self._open.discard(watched)

    @property
    def open_count(self) -> int:
        return len(self._open)

    async def check(self) -> int:
        """Ends the streams whose credential no longer holds; how many were ended."""
        streams = list(self._open)
        if not streams:
            return 0
        token_keys = {w.key for w in streams if w.kind == "token"}
        session_keys = {w.key for w in streams if w.kind == "session"}
        valid: dict[tuple[str, str], tuple[str, str | None]] = {}
        now = datetime.now(UTC)
        async with self._engine.connect() as conn:
            if token_keys:
                t = api_tokens.c
                rows = await conn.execute(
                    sa.select(t.token_hash, t.role, t.extension)
                    .where(t.token_hash.in_(token_keys), t.revoked_at.is_(None)))
                for row in rows:
                    valid[("token", row.token_hash)] = (row.role, row.extension)
            if session_keys:
                s, u = web_sessions.c, web_users.c
                rows = await conn.execute(
                    sa.select(s.id, s.expires_at, u.role, u.extension, u.disabled)
                    .join(web_users, u.id == s.user_id).where(s.id.in_(session_keys)))
                for row in rows:
                    if not row.disabled and now < row.expires_at:
                        valid[("session", row.id)] = (row.role, row.extension)
        ended = 0
        for watched in streams:
            current = valid.get((watched.kind, watched.key))
            if watched.revoked or (current is not None and _same(watched.principal, *current)):
                continue
            watched.revoke()
            ended += 1
            log_event(log, logging.INFO, "events.stream_revoked", caller=
                      f"{watched.principal.kind}:{watched.principal.id}",
                      reason="changed" if current is not None else "revoked")
        return ended

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.check()
            except Exception:  # a database hiccup must not end the loop: the next round retries
                log.exception("events.stream_check_failed")


GUARD: web.AppKey[StreamGuard] = web.AppKey("stream_guard", StreamGuard)


async def guard_ctx(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(app[GUARD].run())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
