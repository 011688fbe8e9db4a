"""The CEL backfill through the real call pipeline (queue -> CallConsumer -> tracker -> store,
on SQLite and PostgreSQL) with the PBX's CEL in a real PostgreSQL `cel` table: calls nobody heard
are added, calls left live or ended during an outage get their true end (`ami+cel`), a record the
AMI events completed is never touched, nothing is ever written twice."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from pbx_bridge.ami.events import AmiEvent, ChannelsSnapshot, ConnectionUp
from pbx_bridge.bus import EventBus
from pbx_bridge.calls import store
from pbx_bridge.calls.backfill import OVERLAP_SECONDS, Backfiller
from pbx_bridge.calls.changes import CallChange, CallHook
from pbx_bridge.calls.consumer import CallConsumer
from pbx_bridge.calls.queue import QueueItem
from pbx_bridge.calls.record import CallRecord
from pbx_bridge.calls.tracker import TrackerSettings
from pbx_bridge.cel.source import CelSource
from pbx_bridge.config import CelConfig
from pbx_bridge.db.schema import calls
from pbx_bridge.events.notifier import Notifier
from tests.cel_support import csv_mappings, load_table, table_rows, unique_table
from tests.e2e_support import wait_until
from tests.test_cel_rebuild import ami_record, assert_same_call
from tests.tracker_support import EXPECTED, check_record, load_items, settings_for

PBX = "pbx"
# The SIP traces were captured on 2026-12-05 between 14:33 and 14:36 UTC.
AFTER = 1796481400.0


def sip_settings(name: str) -> TrackerSettings | None:
    return settings_for("sip_", pbx=PBX) if name == PBX else None


class Hooked:
    def __init__(self) -> None:
        self.seen: list[CallChange] = []

    async def on_change(self, change: CallChange) -> None:
        self.seen.append(change)

    def ended(self) -> list[CallChange]:
        return [c for c in self.seen if c.kind == "ended"]


@dataclass
class Pipeline:
    engine: AsyncEngine
    cel_url: str
    table: str
    now: list[float] = field(default_factory=lambda: [AFTER])
    queue: asyncio.Queue[QueueItem] = field(default_factory=asyncio.Queue)
    hook: Hooked = field(default_factory=Hooked)
    bus: EventBus = field(default_factory=EventBus)
    extra_hooks: list[CallHook] = field(default_factory=list)
    consumer: CallConsumer | None = None
    task: asyncio.Task[None] | None = None

    def clock(self) -> float:
        return self.now[0]

    async def start(self) -> None:
        self.consumer = CallConsumer(self.queue, self.engine, sip_settings,
                                     [self.hook, Notifier(self.bus), *self.extra_hooks],
                                     clock=self.clock, cel_live_grace=30.0)
        self.task = asyncio.create_task(self.consumer.run())

    async def stop(self) -> None:
        """As a kill would: the pipeline is gone, what it saved stays."""
        await self.settled()
        assert self.consumer is not None and self.task is not None
        await self.consumer.stop()
        await asyncio.wait_for(self.task, 30)

    async def feed(self, items: Sequence[QueueItem]) -> None:
        for item in items:
            self.queue.put_nowait(item)
        await self.settled()

    async def settled(self) -> None:
        await asyncio.wait_for(self.queue.join(), 30)
        assert self.consumer is not None
        consumer = self.consumer
        # The batch taken last is saved and hooked.
        await wait_until(lambda: not consumer.busy and self.queue.empty(), 30, "pipeline idle")

    async def sweep(self, **kw: float) -> None:
        source = CelSource(PBX, self.cel_url, self.table)
        backfiller = Backfiller(PBX, source, self.engine, self.queue.put, CelConfig(),
                                clock=self.clock)
        try:
            await backfiller.sweep("test", **kw)
        finally:
            await source.close()
        await self.settled()

    async def records(self) -> list[CallRecord]:
        async with self.engine.connect() as conn:
            return await store.list_calls(conn, limit=None)


@pytest.fixture
async def pipeline(engine: AsyncEngine, cel_pg_url: str) -> AsyncIterator[Pipeline]:
    p = Pipeline(engine, cel_pg_url, unique_table())
    await p.start()
    yield p
    if p.task is not None and not p.task.done():
        await p.stop()


async def cel_has(p: Pipeline, *names: str) -> None:
    rows = []
    for name in names:
        rows += table_rows(csv_mappings(name))
    await load_table(p.cel_url, p.table, rows)


def items(traces: Path, name: str) -> list[QueueItem]:
    return load_items(traces, name, pbx=PBX)


def cut(traces: Path, name: str, until: float) -> list[QueueItem]:
    """The trace's events up to a moment (then the bridge stops hearing)."""
    return [i for i in items(traces, name) if isinstance(i, AmiEvent) and i.timestamp < until]


async def test_calls_nobody_heard_are_added_once(pipeline: Pipeline, traces: Path) -> None:
    names = ["sip_inbound_answered_cel", "sip_queue_ringall_cel", "sip_outbound_busy_cel",
             "sip_attended_transfer", "sip_pickup", "sip_internal_call"]
    await cel_has(pipeline, *names)
    live = pipeline.bus.subscribe()
    await pipeline.sweep()
    messages = []
    while not live.queue.empty():
        message = live.queue.get_nowait()
        assert message is not None
        messages.append(message)
    # Live clients hear of each call once it is over, marked as such; no screen pop for it.
    assert sorted(m["type"] for m in messages) == ["call.ended"] * len(names)
    assert all(m["backfilled"] is True and m["call"]["source"] == "cel" for m in messages)
    records = {r.linkedid: r for r in await pipeline.records()}
    assert len(records) == len(names)
    for name in names:
        rec = records[ami_record(traces, name).linkedid]
        assert rec.source == "cel" and rec.ended_at is not None
        assert_same_call(rec, ami_record(traces, name))
    assert len(pipeline.hook.ended()) == len(names)
    assert all(c.backfilled for c in pipeline.hook.ended())
    # Sweeping again finds them complete: nothing written, no hook runs again.
    await pipeline.sweep()
    assert len(await pipeline.records()) == len(names)
    assert len(pipeline.hook.ended()) == len(names)


async def test_a_live_call_the_bridge_stopped_hearing_gets_its_true_end(
        pipeline: Pipeline, traces: Path) -> None:
    """Killed mid-call: the log holds the call live. After the restart CEL says when it ended
    (not the last event the bridge saw)."""
    name = "sip_inbound_answered_cel"
    await pipeline.feed(cut(traces, name, 1796481220.0))  # answered at :19.3, ends at :24.1
    [live] = await pipeline.records()
    assert live.ended_at is None and live.answered_at is not None
    await pipeline.stop()
    await cel_has(pipeline, name)
    await pipeline.start()  # restart: the call is restored live
    await pipeline.sweep()
    [rec] = await pipeline.records()
    assert rec.id == live.id and rec.source == "ami+cel" and not rec.ended_during_outage
    check_record(rec, EXPECTED[name])
    assert abs((rec.ended_at or 0) - 1796481224.145) < 0.01


async def test_a_call_ended_during_an_outage_is_completed(pipeline: Pipeline, traces: Path) -> None:
    name = "sip_queue_ringall_cel"
    await pipeline.feed([ConnectionUp(PBX, AFTER), *cut(traces, name, 1796481248.0)])
    # Reconnected after the call ended: the snapshot no longer has it.
    await pipeline.feed([ChannelsSnapshot(PBX, 1796481260.0, [])])
    [outage] = await pipeline.records()
    assert outage.ended_during_outage and (outage.ended_at or 0) < 1796481248.0
    await cel_has(pipeline, name)
    await pipeline.sweep()
    [rec] = await pipeline.records()
    assert rec.id == outage.id and rec.source == "ami+cel" and not rec.ended_during_outage
    check_record(rec, EXPECTED[name])
    backfilled = [c for c in pipeline.hook.ended() if c.backfilled]
    assert [c.record.linkedid for c in backfilled] == [rec.linkedid]


async def test_a_record_the_events_completed_is_never_touched(pipeline: Pipeline, traces: Path) -> None:
    name = "sip_attended_transfer"
    await pipeline.feed(items(traces, name))
    [before] = await pipeline.records()
    assert before.source == "ami"
    seen = len(pipeline.hook.seen)
    await cel_has(pipeline, name)
    await pipeline.sweep()
    [after] = await pipeline.records()
    assert after.source == "ami" and after.to_dict() == before.to_dict()
    assert len(pipeline.hook.seen) == seen


async def test_a_pickup_split_by_an_outage_is_one_call_again(pipeline: Pipeline, traces: Path) -> None:
    """The events that join the pickup's phone to the call were lost: the log holds two calls,
    the customer's and the phone's own; CEL shows they are one."""
    name = "sip_pickup"
    await pipeline.feed([ConnectionUp(PBX, AFTER), *cut(traces, name, 1796481310.9475)])
    await pipeline.feed([ChannelsSnapshot(PBX, 1796481320.0, [])])
    assert len(await pipeline.records()) == 2
    await cel_has(pipeline, name)
    await pipeline.sweep()
    [rec] = await pipeline.records()
    assert rec.linkedid == "pbx-1796481308.259" and rec.source == "ami+cel"
    check_record(rec, EXPECTED[name])


async def test_a_call_just_over_is_left_to_the_events_still_coming(
        pipeline: Pipeline, traces: Path) -> None:
    """While the PBX is connected, a call CEL shows ended seconds ago is the AMI path's: its
    last events may be in flight. Past the grace time CEL completes it."""
    name = "sip_internal_call"
    await pipeline.feed([ConnectionUp(PBX, AFTER), *cut(traces, name, 1796481334.0)])
    await cel_has(pipeline, name)
    pipeline.now[0] = 1796481336.97 + 5  # 5 s after its end
    await pipeline.sweep()
    [rec] = await pipeline.records()
    assert rec.ended_at is None
    pipeline.now[0] = 1796481336.97 + 60
    await pipeline.sweep()
    [rec] = await pipeline.records()
    assert rec.source == "ami+cel" and abs((rec.ended_at or 0) - 1796481336.963) < 0.01
    assert rec.click_to_call_id == EXPECTED[name].click_to_call_id  # what only AMI knew


async def test_the_sweep_resumes_where_the_saved_mark_says(pipeline: Pipeline) -> None:
    await cel_has(pipeline, "sip_inbound_answered_cel")
    await pipeline.sweep()
    async with pipeline.engine.connect() as conn:
        marks = await store.load_cel_marks(conn)
    assert marks == {PBX: pytest.approx(AFTER)}
    # Three hours later (the bridge was down): the next sweep starts at the mark, not an hour
    # back, so a call from just after the mark is found.
    late = [dict(m) for m in table_rows(csv_mappings("sip_pickup"))]
    await load_table(pipeline.cel_url, pipeline.table, late)
    pipeline.now[0] = AFTER + 3 * 3600
    source = CelSource(PBX, pipeline.cel_url, pipeline.table)
    backfiller = Backfiller(PBX, source, pipeline.engine, pipeline.queue.put, CelConfig(),
                            clock=pipeline.clock)
    try:
        report = await backfiller.sweep()
    finally:
        await source.close()
    await pipeline.settled()
    assert report.since == pytest.approx(AFTER - OVERLAP_SECONDS)
    async with pipeline.engine.connect() as conn:
        marks = await store.load_cel_marks(conn)
    assert marks == {PBX: pytest.approx(AFTER + 3 * 3600)}


async def test_a_cel_source_that_is_down_never_stops_the_live_path(
        pipeline: Pipeline, traces: Path) -> None:
    source = CelSource(PBX, "postgresql+asyncpg://postgres@127.0.0.1:1/cel", "cel", query_timeout=2)
    backfiller = Backfiller(PBX, source, pipeline.engine, pipeline.queue.put,
                            CelConfig(sweep_seconds=0.05), clock=pipeline.clock)
    backfiller.start()
    try:
        await pipeline.feed(items(traces, "sip_inbound_answered_cel"))
        await asyncio.sleep(0.3)
    finally:
        await backfiller.stop()
    [rec] = await pipeline.records()
    check_record(rec, EXPECTED["sip_inbound_answered_cel"])
    assert source.state == "down" and backfiller.failed_sweeps >= 1 and backfiller.sweeps == 0


async def test_rows_are_read_only_for_the_calls_that_need_them(pipeline: Pipeline, traces: Path) -> None:
    await pipeline.feed(items(traces, "sip_inbound_answered_cel"))
    await cel_has(pipeline, "sip_inbound_answered_cel", "sip_internal_call")
    source = CelSource(PBX, pipeline.cel_url, pipeline.table)
    backfiller = Backfiller(PBX, source, pipeline.engine, pipeline.queue.put, CelConfig(),
                            clock=pipeline.clock)
    try:
        report = await backfiller.sweep()
    finally:
        await source.close()
    await pipeline.settled()
    assert (report.ended, report.needed) == (2, 1)
    assert report.rows == len(csv_mappings("sip_internal_call"))
    async with pipeline.engine.connect() as conn:
        sources = sorted(r.source for r in (await conn.execute(sa.select(calls.c.source))).all())
    assert sources == ["ami", "cel"]


async def test_a_backfilled_call_is_recorded_only_if_the_spool_has_its_file(
        engine: AsyncEngine, cel_pg_url: str, traces: Path, tmp_path: Path) -> None:
    """Nobody sent MixMonitor for a call the bridge never heard: 'not recorded: the bridge was
    not connected', unless the spool holds a file named for it (the dialplan's own MixMonitor, or
    a bridge that died right after sending one): that one is converted as usual."""
    from pbx_bridge.config import Settings
    from pbx_bridge.db.engine import make_sessionmaker
    from pbx_bridge.recording.hook import RecordingHook
    from pbx_bridge.recording.service import NOT_CONNECTED, RecordingService
    from pbx_bridge.runtime import Runtime
    from recordings import catalog

    settings = Settings()
    settings.server.data_dir = str(tmp_path / "var")
    spool = tmp_path / "spool"
    spool.mkdir()
    settings.recordings.spool_dir = str(spool)
    settings.recordings.first_attempt_delay_seconds = 0
    service = RecordingService(Runtime(settings=settings, engine=engine, sessions=make_sessionmaker(engine)))
    # The first call's file as Asterisk's MixMonitor (bD) writes it: stereo slin 8 kHz.
    (spool / "pbx-1796481217.224.raw").write_bytes(
        (traces / "recordings" / "pbx-1795731456.0.raw").read_bytes())
    p = Pipeline(engine, cel_pg_url, unique_table(), extra_hooks=[RecordingHook(service)])
    await cel_has(p, "sip_inbound_answered_cel", "sip_queue_ringall_cel")
    await p.start()
    service.start()
    try:
        await p.sweep()
        ids = {r.linkedid: r.id for r in await p.records()}

        async def states() -> dict[str, str]:
            async with engine.connect() as conn:
                rows = {lid: await catalog.get_by_call(conn, cid or 0) for lid, cid in ids.items()}
            return {lid: row.state for lid, row in rows.items() if row is not None}

        await wait_until(lambda: _ready(states), 20, "the found file converted")
        async with engine.connect() as conn:
            missing = await catalog.get_by_call(conn, ids["pbx-1796481244.231"] or 0)
        assert missing is not None and missing.state == "not_recorded"
        assert missing.last_error == NOT_CONNECTED
    finally:
        await p.stop()
        await service.stop()


async def _ready(states: Callable[[], Awaitable[dict[str, str]]]) -> bool:
    found = await states()
    return found.get("pbx-1796481217.224") == "ready" and "pbx-1796481244.231" in found
