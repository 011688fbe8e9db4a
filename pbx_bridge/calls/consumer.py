"""The call pipeline: the ONE task that consumes the in-order queue of AMI events and control
items from every PBX connection, turns them into call changes (a CallTracker per PBX), saves
them (all changes of one drained batch in one transaction), then runs the hooks in order.
Event listeners (click-to-call follows OriginateResponse / DialBegin / DialEnd) see each batch's
raw AMI events, in order, before that batch's changes are saved and hooked.

On start it restores the calls the database still has live, then applies the journaled events
an earlier process read but never saved (pbx_bridge.ami.journal; the checkpoint of the last one
applied is saved with the calls, in the same transaction), so after a restart (even kill -9)
nothing read is lost and the first CoreShowChannels answer ends the calls that are gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from pbx_bridge.ami.events import AmiEvent, ChannelsSnapshot, ConnectionLost, ConnectionUp
from pbx_bridge.ami.journal import Journal
from pbx_bridge.calls import store
from pbx_bridge.calls.changes import BatchPreparingHook, CallChange, CallHook
from pbx_bridge.calls.queue import QueueItem
from pbx_bridge.calls.rebuild import rebuild_calls
from pbx_bridge.calls.record import CallRecord
from pbx_bridge.calls.tracker import CallTracker, TrackerSettings
from pbx_bridge.cel.rows import CelCalls
from pbx_bridge.config import PbxConfig, PhoneConfig
from pbx_bridge.log import event, log_context

log = logging.getLogger("pbx_bridge.calls")

PURGE_EVERY = 3600.0  # seconds between purges of old raw events
# A batch with no call changes still saves the journal checkpoint once this many events went by
# (so the journal's applied segments can be deleted on a PBX that is quiet but chatty).
CHECKPOINT_EVERY = 5000
# With a call waiting for its OriginateResponse (pbx_bridge.calls.tracking.originates), a PBX
# this many seconds quiet means none is coming: the call is ended as it stands.
IDLE_FLUSH_SECONDS = 2.0
LAG_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                                  30.0, float("inf"))


@dataclass
class LagHistogram:
    """Event lag (now - the event's arrival, or its Timestamp): Prometheus-style buckets."""

    buckets: tuple[float, ...] = LAG_BUCKETS
    counts: list[int] = field(default_factory=lambda: [0] * len(LAG_BUCKETS))
    count: int = 0
    total: float = 0.0

    def observe(self, seconds: float) -> None:
        self.count += 1
        self.total += seconds
        for i, bound in enumerate(self.buckets):
            if seconds <= bound:
                self.counts[i] += 1
                break

    def cumulative(self) -> list[tuple[float, int]]:
        out, running = [], 0
        for bound, n in zip(self.buckets, self.counts, strict=True):
            running += n
            out.append((bound, running))
        return out


def tracker_settings_for(pbx_configs: Sequence[PbxConfig], phone: PhoneConfig,
                         default: PbxConfig | None = None
                         ) -> Callable[[str], TrackerSettings | None]:
    """TrackerSettings by PBX name from the configuration; `default` serves any other name
    (the built-in simulator)."""
    by_name = {p.name: p for p in pbx_configs}

    def lookup(name: str) -> TrackerSettings | None:
        cfg = by_name.get(name, default)
        if cfg is None:
            return None
        return TrackerSettings(pbx=name, operator_channel=re.compile(cfg.operator_channel),
                               inbound_contexts=frozenset(cfg.inbound_contexts),
                               default_region=phone.default_region,
                               max_extension_length=phone.max_extension_length)

    return lookup


# Sees every AMI event of a batch, in order, before the batch's call changes are saved (a feature
# that follows raw events, such as click-to-call's OriginateResponse / DialBegin / DialEnd).
EventListener = Callable[[AmiEvent], Awaitable[None]]
# Told the PBX's name after each CoreShowChannels resync is applied (the CEL backfill then looks
# for what the outage hid).
ResyncListener = Callable[[str], None]
# In every transaction that saves calls: may this process still write? (With standbys, only the
# active one may: pbx_bridge.standby.leadership.) False rolls the transaction back.
Fence = Callable[[AsyncConnection], Awaitable[bool]]


class _Fenced(Exception):
    """The fence said no: roll back, save nothing, stop."""


class CallConsumer:
    def __init__(
        self,
        queue: asyncio.Queue[QueueItem],
        engine: AsyncEngine,
        tracker_settings: Callable[[str], TrackerSettings | None],
        hooks: Sequence[CallHook] = (),
        *,
        event_listeners: Sequence[EventListener] = (),
        journals: Mapping[str, Journal] | None = None,
        keep_raw_days: int = 0,
        max_batch: int = 2000,
        clock: Callable[[], float] = time.time,
        retry_delay: float = 1.0,
        cel_live_grace: float = 30.0,
        fence: Fence | None = None,
        on_fenced: Callable[[], None] | None = None,
    ) -> None:
        self.queue = queue
        self.engine = engine
        self.tracker_settings = tracker_settings
        self.hooks = list(hooks)
        self.event_listeners = list(event_listeners)
        # PBX -> its journal; checkpoints: the last journaled event applied, as saved / as seen.
        self.journals = dict(journals or {})
        self._saved_seq: dict[str, int] = {}
        self._seen_seq: dict[str, int] = {}
        self.replayed = 0
        # Raw AMI events are kept this many days (0 = not kept), purged once an hour.
        self.keep_raw_days = keep_raw_days
        self.keep_raw = keep_raw_days > 0
        self._next_purge = 0.0
        self.max_batch = max_batch
        self.clock = clock
        self.retry_delay = retry_delay
        self.trackers: dict[str, CallTracker] = {}
        # While a PBX is connected, a call CEL shows over for less than this is left to AMI.
        self.cel_live_grace = cel_live_grace
        self.fence = fence
        self.on_fenced = on_fenced
        self.fenced = False
        # Working on a batch taken from the queue (tests and tools wait for it to be done).
        self.busy = False
        self.resync_listeners: list[ResyncListener] = []
        self._connected: dict[str, bool] = {}
        self._cel_marks: dict[str, float] = {}  # PBX -> CEL swept up to, saved with the calls
        self._stopping = asyncio.Event()
        self._pending: list[CallChange] = []
        self._pending_raw: list[AmiEvent] = []
        # Metrics (the API exports them).
        self.events_processed = 0
        self.changes_saved = 0
        self.batches = 0
        self.hook_errors = 0
        self.listener_errors = 0
        self.save_errors = 0
        self.events_ignored = 0  # of a PBX with no configuration
        self.item_errors = 0
        self.last_lag_seconds = 0.0
        self.last_pbx_lag_seconds = 0.0
        self.lag = LagHistogram()
        self.restored = 0
        self.backfilled = 0  # calls written from CEL

    def tracker(self, pbx: str) -> CallTracker | None:
        tracker = self.trackers.get(pbx)
        if tracker is None:
            settings = self.tracker_settings(pbx)
            if settings is None:
                return None
            tracker = self.trackers[pbx] = CallTracker(settings)
        return tracker

    async def restore(self) -> None:
        """Calls the database still has live go back into their trackers; the journal
        checkpoints are read."""
        async with self.engine.connect() as conn:
            records = await store.load_live(conn)
            self._saved_seq = await store.load_journal_checkpoints(conn)
        by_pbx: dict[str, list[CallRecord]] = {}
        for rec in records:
            by_pbx.setdefault(rec.pbx, []).append(rec)
        for pbx, recs in by_pbx.items():
            tracker = self.tracker(pbx)
            if tracker is not None:
                tracker.restore(recs)
                self.restored += len(recs)
        if records:
            event(log, logging.INFO, "calls.restored", count=self.restored)

    async def run(self) -> None:
        # Events must not be applied before the live calls are back in the trackers (the first
        # snapshot would not know them): wait for the database, however long it takes.
        while True:
            try:
                await self.restore()
                break
            except (OSError, sa.exc.SQLAlchemyError) as exc:
                self.save_errors += 1
                event(log, logging.ERROR, "calls.restore_failed", error=str(exc)[:300])
                if self._stopping.is_set():
                    return
                await asyncio.sleep(self.retry_delay)
        await self._replay_journals()
        while not self.fenced:
            self.busy = False
            batch = await self._next_batch()
            if batch is None:
                break
            self.busy = True
            changes = self._process(batch)
            if self.event_listeners:
                await self._run_listeners(batch)
            await self._save_and_notify(changes)
        self.busy = False
        # Whatever could not be saved yet gets a last chance (and the checkpoint its update).
        if not self.fenced:
            await self._save_and_notify([], final=True)

    async def _replay_journals(self) -> None:
        """Before anything new: the events an earlier process journaled but never applied."""
        for pbx, journal in self.journals.items():
            pending = journal.unapplied(self._saved_seq.get(pbx, 0))
            if not pending:
                continue
            event(log, logging.WARNING, "calls.journal_replay", pbx=pbx, events=len(pending),
                  first_seq=pending[0][0], last_seq=pending[-1][0])
            for start in range(0, len(pending), self.max_batch):
                batch: list[QueueItem] = []
                for seq, ev in pending[start:start + self.max_batch]:
                    ev.seq = seq
                    batch.append(ev)
                self.replayed += len(batch)
                changes = self._process(batch)
                if self.event_listeners:
                    await self._run_listeners(batch)
                await self._save_and_notify(changes)

    @property
    def queue_depth(self) -> int:
        """Items waiting (the metrics endpoint exports it)."""
        return self.queue.qsize()

    async def stop(self) -> None:
        """Drain what is queued, then let run() return."""
        self._stopping.set()

    async def _next_batch(self) -> list[QueueItem] | None:
        queue = self.queue
        if queue.empty():
            if self._stopping.is_set():
                return None
            getter = asyncio.ensure_future(queue.get())
            stopper = asyncio.ensure_future(self._stopping.wait())
            pending_ends = any(t.has_pending_ends for t in self.trackers.values())
            try:
                done, _ = await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED,
                                             timeout=IDLE_FLUSH_SECONDS if pending_ends else None)
            except asyncio.CancelledError:
                getter.cancel()  # an item not yet taken stays in the queue
                raise
            finally:
                stopper.cancel()
            if not done:  # quiet: an empty batch flushes what waits (see _process)
                getter.cancel()
                return []
            if getter not in done:
                getter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await getter
                if queue.empty():
                    return None
                batch = []
            else:
                batch = [getter.result()]
                queue.task_done()
        else:
            batch = []
        while len(batch) < self.max_batch:
            try:
                batch.append(queue.get_nowait())
            except asyncio.QueueEmpty:
                break
            queue.task_done()
        return batch

    def _process(self, batch: list[QueueItem]) -> list[CallChange]:
        changes: list[CallChange] = []
        if not batch:
            for tracker in self.trackers.values():
                changes += tracker.flush_pending_ends()
            return changes
        now = self.clock()
        for item in batch:
            try:
                changes += self._process_item(item)
            except Exception:
                # The tracker never raises on bad input; this is a bug, and it must not stop
                # the pipeline for every other call.
                self.item_errors += 1
                log.exception("calls.item_failed item=%s", type(item).__name__)
        # Lag of the batch's newest event: how far behind the PBX the call log is (from its
        # arrival: the pipeline's own delay; from its Timestamp: plus network and clock skew).
        for item in reversed(batch):
            if isinstance(item, AmiEvent):
                when = item.received_at or item.timestamp
                if when > 0:
                    self.last_lag_seconds = max(0.0, now - when)
                    self.lag.observe(self.last_lag_seconds)
                stamped = item.timestamp
                if stamped > 0:
                    self.last_pbx_lag_seconds = now - stamped
                break
        return changes

    def _process_item(self, item: QueueItem) -> list[CallChange]:
        if isinstance(item, AmiEvent):
            self.events_processed += 1
            tracker = self.tracker(item.pbx)
            if tracker is None:
                self.events_ignored += 1
                if item.seq:
                    self._seen_seq[item.pbx] = item.seq
                return []
            if item.seq:
                self._seen_seq[item.pbx] = item.seq
            if self.keep_raw:
                self._pending_raw.append(item)
            return tracker.feed(item)
        if isinstance(item, ChannelsSnapshot):
            event(log, logging.INFO, "calls.resync", pbx=item.pbx, channels=len(item.channels))
            tracker = self.tracker(item.pbx)
            changes = tracker.resync(item) if tracker is not None else []
            for listener in self.resync_listeners:
                listener(item.pbx)
            return changes
        if isinstance(item, CelCalls):
            return self._absorb(item)
        if isinstance(item, ConnectionUp | ConnectionLost):
            self._connected[item.pbx] = isinstance(item, ConnectionUp)
            event(log, logging.DEBUG, "calls.connection", pbx=item.pbx, kind=type(item).__name__)
        return []

    def _absorb(self, item: CelCalls) -> list[CallChange]:
        """Calls read from CEL: rebuilt through a tracker of their own, then taken in by the
        PBX's live tracker (which knows which of them it is still following)."""
        tracker = self.tracker(item.pbx)
        if tracker is None:
            return []
        if item.swept_until is not None:
            self._cel_marks[item.pbx] = max(item.swept_until, self._cel_marks.get(item.pbx, 0.0))
        rebuilt = rebuild_calls(item.rows, tracker.settings)
        leave_after = self.clock() - self.cel_live_grace if self._connected.get(item.pbx) else None
        changes = tracker.absorb(rebuilt.records, rebuilt.merged, leave_after=leave_after)
        event(log, logging.INFO if changes else logging.DEBUG, "calls.cel_rebuilt", pbx=item.pbx,
              reason=item.reason, rows=len(item.rows), calls=len(rebuilt.records),
              taken=sum(c.kind == "ended" for c in changes))
        return changes

    async def _save_and_notify(self, changes: list[CallChange], *, final: bool = False) -> None:
        self._pending += changes
        advanced = {pbx: seq for pbx, seq in self._seen_seq.items()
                    if seq > self._saved_seq.get(pbx, 0)}
        checkpoint_due = bool(advanced) and (final or any(
            seq - self._saved_seq.get(pbx, 0) >= CHECKPOINT_EVERY for pbx, seq in advanced.items()))
        if not self._pending and not self._pending_raw and not checkpoint_due and not self._cel_marks:
            return
        try:
            async with self.engine.begin() as conn:
                if self.fence is not None and not await self.fence(conn):
                    raise _Fenced
                skipped = await store.save_changes(conn, self._pending)
                if self._pending_raw:
                    await store.save_raw_events(conn, self._pending_raw)
                # Every event seen so far has its changes in this transaction or an earlier one.
                await store.save_journal_checkpoints(conn, advanced)
                await store.save_cel_marks(conn, self._cel_marks)
        except _Fenced:
            # Another bridge is active now: it saves (and its CEL backfill completes) these
            # calls. Nothing more from this one.
            self.fenced = True
            self._pending, self._pending_raw, self._cel_marks = [], [], {}
            event(log, logging.WARNING, "calls.fenced", hint="another bridge is active")
            if self.on_fenced is not None:
                self.on_fenced()
            return
        except (OSError, sa.exc.SQLAlchemyError) as exc:
            # Keep them: the next batch retries (records are whole states, so a later write
            # of the same call supersedes nothing it needs). Hooks wait for the save.
            self.save_errors += 1
            event(log, logging.ERROR, "calls.save_failed", error=str(exc)[:300],
                  pending=len(self._pending))
            if not self._stopping.is_set():
                await asyncio.sleep(self.retry_delay)
            return
        # Backfilled calls the log already had whole (the AMI events completed them) are done.
        saved = [c for c in self._pending if id(c) not in skipped]
        self.backfilled += sum(c.backfilled and c.kind == "ended" for c in saved)
        self._pending, self._pending_raw = [], []
        self._cel_marks = {}
        self._saved_seq.update(advanced)
        for pbx, seq in advanced.items():
            journal = self.journals.get(pbx)
            if journal is not None:
                journal.applied(seq)
        if self.keep_raw and self.clock() >= self._next_purge:
            self._next_purge = self.clock() + PURGE_EVERY
            try:
                async with self.engine.begin() as conn:
                    purged = await store.purge_raw_events(conn, self.keep_raw_days)
                if purged:
                    event(log, logging.INFO, "calls.raw_events_purged", count=purged)
            except (OSError, sa.exc.SQLAlchemyError) as exc:
                event(log, logging.WARNING, "calls.purge_failed", error=str(exc)[:300])
        self.changes_saved += len(saved)
        self.batches += 1
        for change in saved:
            rec = change.record
            if rec.id is not None and rec.ended_at is None:
                tracker = self.trackers.get(rec.pbx)
                if tracker is not None:
                    tracker.set_id(rec.linkedid, rec.id)
        # Calls still going first: their screen pops must not wait behind the card work of the
        # calls that ended in this batch. Each call's changes stay together and in order.
        ending = {(c.record.pbx, c.record.linkedid) for c in saved if c.kind == "ended"}
        going = [c for c in saved if (c.record.pbx, c.record.linkedid) not in ending]
        # Of those, the calls ringing an operator first: under load a batch holds dozens of
        # calls, and a screen pop waited behind every other call's hooks (bench_ui pop).
        ringing = {(c.record.pbx, c.record.linkedid) for c in going if c.kind == "ringing"}
        going.sort(key=lambda c: (c.record.pbx, c.record.linkedid) not in ringing)  # stable
        for change in going:
            await self._run_hooks(change)
        if ending:
            ended = [c for c in saved if (c.record.pbx, c.record.linkedid) in ending]
            await self._prepare_hooks(ended)
            for change in ended:
                await self._run_hooks(change)

    async def _prepare_hooks(self, changes: list[CallChange]) -> None:
        for hook in self.hooks:
            if isinstance(hook, BatchPreparingHook):
                try:
                    await hook.prepare(changes)
                except Exception:
                    # on_change does the work call by call instead: counted, not lost.
                    self.hook_errors += 1
                    log.exception("calls.hook_prepare_failed hook=%s changes=%d",
                                  type(hook).__name__, len(changes))

    async def _run_listeners(self, batch: list[QueueItem]) -> None:
        for item in batch:
            if not isinstance(item, AmiEvent):
                continue
            for listener in self.event_listeners:
                try:
                    await listener(item)
                except Exception:
                    # Like a hook: logged and counted, never stops the pipeline.
                    self.listener_errors += 1
                    with log_context(pbx=item.pbx):
                        log.exception("calls.listener_failed event=%s", item.name)

    async def _run_hooks(self, change: CallChange) -> None:
        for hook in self.hooks:
            try:
                await hook.on_change(change)
            except Exception:
                # A failing stage (CRM down, a bug) must not stop the pipeline or later hooks.
                self.hook_errors += 1
                with log_context(pbx=change.record.pbx, linkedid=change.record.linkedid):
                    log.exception("calls.hook_failed hook=%s kind=%s",
                                  type(hook).__name__, change.kind)
