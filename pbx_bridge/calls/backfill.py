"""The CEL backfill: every call Asterisk's CEL shows over that the log lacks, still has live,
or has ended during an outage, read from CEL and handed to the call pipeline, which rebuilds it
through the same tracker as live events and saves it (upsert by PBX + Linkedid: never twice,
never over a record the AMI events completed).

It sweeps at start (from where the last sweep got to, however long the bridge was down), after
every AMI reconnect, and every `cel.sweep_seconds` over at least the last `cel.window_minutes`.
A CEL database that is down or misconfigured only skips the sweep (the source keeps its state,
logs once, and the metrics show it): the live AMI path never waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from pbx_bridge.calls import store
from pbx_bridge.cel.rows import CelCalls
from pbx_bridge.cel.source import CelSource, CelUnavailable
from pbx_bridge.config import CelConfig
from pbx_bridge.log import event

log = logging.getLogger("pbx_bridge.calls.backfill")

# A sweep starts this much before the last one ended: rows written late (a PBX clock a little
# behind ours, a CEL backend that batches inserts) are not missed.
OVERLAP_SECONDS = 300.0


@dataclass
class SweepReport:
    reason: str
    since: float
    until: float
    ended: int = 0  # calls CEL shows over in the window
    needed: int = 0  # of those, the ones the log lacks or has only in part
    rows: int = 0


# Where the rows go: the pipeline's queue (serve), or a caller that saves them itself.
Sink = Callable[[CelCalls], Awaitable[None]]


class Backfiller:
    def __init__(self, pbx: str, source: CelSource, engine: AsyncEngine, sink: Sink,
                 config: CelConfig, *, clock: Callable[[], float] = time.time) -> None:
        self.pbx = pbx
        self.source = source
        self.engine = engine
        self.sink = sink
        self.config = config
        self.clock = clock
        self.swept_until: float | None = None  # as saved by the pipeline
        self.sweeps = 0
        self.failed_sweeps = 0
        self.calls_queued = 0
        self.last_report: SweepReport | None = None
        self._wake = asyncio.Event()
        self._reason = "start"
        self._task: asyncio.Task[None] | None = None

    @property
    def lag_seconds(self) -> float | None:
        """How far behind now CEL is known to be swept (None before the first sweep)."""
        return None if self.swept_until is None else max(0.0, self.clock() - self.swept_until)

    # --- running ------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"cel:{self.pbx}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.source.close()

    def trigger(self, reason: str) -> None:
        """Sweep now (an AMI reconnect: what did the outage hide?)."""
        self._reason = reason
        self._wake.set()

    async def _run(self) -> None:
        while True:
            reason, self._reason = self._reason, "sweep"
            self._wake.clear()
            try:
                await self.sweep(reason)
            except asyncio.CancelledError:
                raise
            except CelUnavailable:
                self.failed_sweeps += 1  # the source's state and its one log line say why
            except (OSError, sa.exc.SQLAlchemyError) as exc:  # our own database
                self.failed_sweeps += 1
                event(log, logging.WARNING, "cel.sweep_failed", pbx=self.pbx, error=str(exc)[:300])
            except Exception:
                self.failed_sweeps += 1
                log.exception("cel.sweep_error", extra={"kv": {"pbx": self.pbx}})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.config.sweep_seconds)

    # --- one sweep ----------------------------------------------------------------------

    async def sweep(self, reason: str = "sweep", *, since: float | None = None,
                    until: float | None = None,
                    progress: Callable[[int, int], None] | None = None) -> SweepReport:
        """Find, read and hand over the calls that need it. Without `since`: from the saved
        mark (less an overlap), or the window, whichever is earlier; without `until`: now, and
        the mark moves there once the pipeline saved the calls."""
        now = self.clock()
        mark = await self._saved_mark()
        if since is None:
            since = now - self.config.window_minutes * 60
            if mark is not None:
                since = min(since, mark - OVERLAP_SECONDS)
        moves_mark = until is None
        until = now if until is None else until
        report = SweepReport(reason, since, until)
        ended = await self.source.ended_between(datetime.fromtimestamp(since, UTC),
                                                datetime.fromtimestamp(until, UTC))
        report.ended = len(ended)
        linkedids = list(dict.fromkeys(lid for lid, _ in ended))
        async with self.engine.connect() as conn:
            needed = await store.needing_backfill(conn, self.pbx, linkedids)
        report.needed = len(needed)
        size = self.config.batch_calls
        batches = [needed[i:i + size] for i in range(0, len(needed), size)] or [[]]
        for number, batch in enumerate(batches, 1):
            rows = await self.source.call_rows(batch) if batch else []
            report.rows += len(rows)
            last = number == len(batches)
            await self.sink(CelCalls(self.pbx, rows, reason,
                                     swept_until=until if last and moves_mark else None))
            self.calls_queued += len(batch)
            if progress is not None:
                progress(min(number * size, len(needed)), len(needed))
        self.sweeps += 1
        self.last_report = report
        level = logging.INFO if report.needed or reason != "sweep" else logging.DEBUG
        event(log, level, "cel.swept", pbx=self.pbx, reason=reason, ended=report.ended,
              backfilled=report.needed, rows=report.rows,
              since=datetime.fromtimestamp(since, UTC).isoformat(timespec="seconds"))
        return report

    async def _saved_mark(self) -> float | None:
        async with self.engine.connect() as conn:
            marks = await store.load_cel_marks(conn)
        self.swept_until = marks.get(self.pbx)
        return self.swept_until


def describe_sources(backfillers: Sequence[Backfiller]) -> dict[str, dict[str, object]]:
    """For /readyz: each PBX's CEL source state and the backfill lag."""
    return {b.pbx: {"state": b.source.state, "error": b.source.last_error or None,
                    "lag_seconds": None if b.lag_seconds is None else round(b.lag_seconds, 1)}
            for b in backfillers}
