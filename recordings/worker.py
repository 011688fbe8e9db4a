"""The background job that converts ended calls' recordings, one attempt at a time.

Work is durable: it is the `processing` rows in the database, so a restart resumes it. `wake()`
is called when a call ends; otherwise the worker sleeps until the next retry is due (or `poll`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from recordings import catalog, finalize
from recordings.catalog import RecordingRow
from recordings.finalize import FinalizeOptions

log = logging.getLogger("recordings.worker")

OnFinished = Callable[[RecordingRow], Awaitable[None]]


class ConversionWorker:
    def __init__(self, engine: AsyncEngine, options: FinalizeOptions, *,
                 on_finished: OnFinished | None = None, poll_seconds: float = 30.0,
                 clock: Callable[[], datetime] | None = None) -> None:
        self._engine = engine
        self._options = options
        self._on_finished = on_finished
        self._poll = poll_seconds
        self._clock = clock or (lambda: datetime.now(UTC))
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def run_once(self) -> list[RecordingRow]:
        """Attempt every recording that is due now; the rows after their attempt."""
        done: list[RecordingRow] = []
        while True:
            async with self._engine.connect() as conn:
                batch = await catalog.due(conn, self._clock())
            if not batch:
                return done
            for row in batch:
                updated = await finalize.attempt(self._engine, row, self._options, now=self._clock)
                done.append(updated)
                if updated.state != "processing" and self._on_finished is not None:
                    try:
                        await self._on_finished(updated)
                    except Exception:  # a listener's bug must not stop conversions
                        log.exception("recording.listener_failed",
                                      extra={"kv": {"call_id": updated.call_id}})

    async def run(self) -> None:
        while True:
            self._wake.clear()  # before the work: a wake() during it is not lost
            try:
                await self.run_once()
                async with self._engine.connect() as conn:
                    next_at = await catalog.next_due_at(conn)
            except asyncio.CancelledError:
                raise
            except Exception:  # database down: log, wait, try again
                log.exception("recording.worker_error")
                next_at = None
            timeout = self._poll
            if next_at is not None:
                timeout = max(0.05, min(timeout, (next_at - self._clock()).total_seconds()))
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                pass
