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
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from pbx_bridge.bus import Subscription
from pbx_bridge.http.auth import CredentialCheck, CredentialKind, Principal
from pbx_bridge.log import event as log_event

log = logging.getLogger("pbx_bridge.events")

# With a cache time of 0 (tests) the loop still sleeps this long between checks.
MIN_INTERVAL = 0.2


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
    def __init__(self, engine: AsyncEngine, interval: float,
                 checks: Mapping[CredentialKind, CredentialCheck]) -> None:
        self._engine = engine
        self.interval = max(interval, MIN_INTERVAL)
        # One check per kind of credential, from the feature that stores it (the server's
        # CREDENTIAL_CHECKS): the guard knows no token or session table.
        self._checks = checks
        self._stopping = asyncio.Event()
        self._open: set[Watched] = set()

    def watches(self, kind: CredentialKind) -> bool:
        return kind in self._checks

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
        valid: dict[tuple[str, str], tuple[str, str | None]] = {}
        async with self._engine.connect() as conn:
            for kind, check in self._checks.items():
                keys = {w.key for w in streams if w.kind == kind}
                if keys:  # one query per kind for all open streams
                    for key, now in (await check(conn, keys)).items():
                        valid[(kind, key)] = now
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
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.interval)
                break
            try:
                await self.check()
            except Exception:  # a database hiccup must not end the loop: the next round retries
                log.exception("events.stream_check_failed")

    def stop(self) -> None:
        """Ends run() after the round in progress: cancelling a round in the middle of its
        query can leave the engine's pooled connection waiting forever at shutdown."""
        self._stopping.set()


GUARD: web.AppKey[StreamGuard] = web.AppKey("stream_guard", StreamGuard)


async def guard_ctx(app: web.Application) -> AsyncIterator[None]:
    guard = app[GUARD]
    task = asyncio.create_task(guard.run())
    yield
    guard.stop()
    try:
        await asyncio.wait_for(asyncio.shield(task), 10)
    except TimeoutError:  # a round stuck on the database: cancel it as the last resort
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
