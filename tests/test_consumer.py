"""The call pipeline with a real asyncio queue and real databases: saved before hooks, hooks in
order, a failing hook never stops it, restart reconciliation, graceful stop."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from pbx_bridge.ami.events import AmiEvent, ChannelsSnapshot, ConnectionLost, ConnectionUp
from pbx_bridge.calls import store
from pbx_bridge.calls.changes import CallChange
from pbx_bridge.calls.consumer import CallConsumer, tracker_settings_for
from pbx_bridge.calls.queue import QueueItem
from pbx_bridge.calls.tracker import CallTracker, TrackerSettings
from pbx_bridge.config import PbxConfig, PhoneConfig
from pbx_bridge.db.schema import calls, raw_events
from tests.tracker_support import EXPECTED, check_record, load_items, rewrite_ids, settings_for


def lab_settings(name: str) -> TrackerSettings | None:
    return settings_for("lab", pbx=name) if name == "lab" else None


class Recorder:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.seen: list[CallChange] = []
        self.saved_before: list[bool] = []

    async def on_change(self, change: CallChange) -> None:
        # The record is in the database before any hook runs, with its id.
        async with self.engine.connect() as conn:
            rec = await store.get_call(conn, change.record.id or -1)
        self.saved_before.append(rec is not None)
        self.seen.append(change)


class Exploding:
    calls = 0

    async def on_change(self, change: CallChange) -> None:
        self.calls += 1
        raise RuntimeError("CRM is down")


async def _run_until_idle(consumer: CallConsumer, queue: asyncio.Queue[QueueItem]) -> None:
    task = asyncio.create_task(consumer.run())
    await asyncio.wait_for(queue.join(), 30)
    await consumer.stop()
    await asyncio.wait_for(task, 30)


async def test_pipeline_saves_then_runs_hooks_and_survives_a_failing_hook(
    engine: AsyncEngine, traces: Path
) -> None:
    queue: asyncio.Queue[QueueItem] = asyncio.Queue()
    recorder, boom = Recorder(engine), Exploding()
    consumer = CallConsumer(queue, engine, lab_settings, [boom, recorder])
    names = ["inbound_answered", "queue_ringall_answered", "inbound_noanswer"]
    queue.put_nowait(ConnectionUp(pbx="lab", at=0.0))
    for i, name in enumerate(names):
        for item in rewrite_ids(load_items(traces, name), f"q{i}-"):
            queue.put_nowait(item)
    queue.put_nowait(ConnectionLost(pbx="lab", at=0.0, reason="test"))
    await _run_until_idle(consumer, queue)
    assert boom.calls == len(recorder.seen) == consumer.hook_errors > 0
    assert all(recorder.saved_before)
    ended = [c.record for c in recorder.seen if c.kind == "ended"]
    assert len(ended) == 3
    for name, rec in zip(names, ended, strict=True):
        check_record(rec, EXPECTED[name])
    async with engine.connect() as conn:
        rows = (await conn.execute(sa.select(calls.c.state))).all()
    assert sorted(r.state for r in rows) == ["ended"] * 3
    assert consumer.events_processed == sum(
        1 for n in names for i in load_items(traces, n) if isinstance(i, AmiEvent)
    )
    assert consumer.lag.count > 0 and consumer.last_lag_seconds >= 0


async def test_events_of_an_unconfigured_pbx_are_counted_not_tracked(
    engine: AsyncEngine, traces: Path
) -> None:
    queue: asyncio.Queue[QueueItem] = asyncio.Queue()
    consumer = CallConsumer(queue, engine, lab_settings)
    for item in load_items(traces, "inbound_busy", pbx="elsewhere"):
        queue.put_nowait(item)
    await _run_until_idle(consumer, queue)
    assert consumer.events_ignored == consumer.events_processed > 0
    async with engine.connect() as conn:
        assert await store.list_calls(conn) == []


async def test_restart_reconciles_calls_that_ended_while_down(engine: AsyncEngine, traces: Path) -> None:
    items = [i for i in load_items(traces, "outbound_answered") if isinstance(i, AmiEvent)]
    cut = next(k for k, e in enumerate(items) if e.name == "BridgeEnter") + 2
    queue: asyncio.Queue[QueueItem] = asyncio.Queue()
    first = CallConsumer(queue, engine, lab_settings)
    for item in items[:cut]:
        queue.put_nowait(item)
    await _run_until_idle(first, queue)  # then the bridge "dies": the call is live in the DB
    async with engine.connect() as conn:
        (live,) = await store.load_live(conn, "lab")
    assert live.answered_at is not None

    queue2: asyncio.Queue[QueueItem] = asyncio.Queue()
    second = CallConsumer(queue2, engine, lab_settings)
    queue2.put_nowait(ConnectionUp(pbx="lab", at=items[-1].timestamp + 30))
    queue2.put_nowait(ChannelsSnapshot(pbx="lab", at=items[-1].timestamp + 30, channels=[]))
    await _run_until_idle(second, queue2)
    assert second.restored == 1
    async with engine.connect() as conn:
        (rec,) = await store.list_calls(conn)
        assert await store.load_live(conn) == []
    assert rec.id == live.id and rec.ended_during_outage and rec.status == "answered"
    assert rec.direction == "outbound" and rec.customer_number == "+74959876543"
    assert rec.ended_at is not None and rec.ended_at <= items[cut - 1].timestamp + 0.01


async def test_restart_keeps_following_a_call_still_up(engine: AsyncEngine, traces: Path) -> None:
    """The queue trace's own CoreShowChannels answer (mid-call) after a restart: the call goes
    on and ends once, with the record it would have had without the restart."""
    items = load_items(traces, "queue_ringall_answered")
    snap_at = next(k for k, i in enumerate(items) if isinstance(i, ChannelsSnapshot))
    queue: asyncio.Queue[QueueItem] = asyncio.Queue()
    first = CallConsumer(queue, engine, lab_settings)
    for item in items[:snap_at]:
        queue.put_nowait(item)
    await _run_until_idle(first, queue)
    queue2: asyncio.Queue[QueueItem] = asyncio.Queue()
    recorder = Recorder(engine)
    second = CallConsumer(queue2, engine, lab_settings, [recorder])
    for item in items[snap_at:]:
        queue2.put_nowait(item)
    await _run_until_idle(second, queue2)
    assert [c.kind for c in recorder.seen] == ["ended"]
    async with engine.connect() as conn:
        (rec,) = await store.list_calls(conn)
    check_record(rec, EXPECTED["queue_ringall_answered"])
    assert not rec.ended_during_outage


async def test_stop_drains_the_queue_first(engine: AsyncEngine, traces: Path) -> None:
    queue: asyncio.Queue[QueueItem] = asyncio.Queue()
    consumer = CallConsumer(queue, engine, lab_settings, max_batch=7)
    items = load_items(traces, "internal_call")
    for item in items:
        queue.put_nowait(item)
    task = asyncio.create_task(consumer.run())
    await consumer.stop()
    await asyncio.wait_for(task, 30)
    assert queue.empty() and consumer.batches > 1
    async with engine.connect() as conn:
        (rec,) = await store.list_calls(conn)
    check_record(rec, EXPECTED["internal_call"])


async def test_raw_events_kept_when_asked(engine: AsyncEngine, traces: Path) -> None:
    queue: asyncio.Queue[QueueItem] = asyncio.Queue()
    # The traces are from late 2026; the clock says 30 days later, so with 40 days kept they
    # stay, and with 10 days kept the hourly purge removes them.
    items = load_items(traces, "inbound_busy")
    later = max(i.timestamp for i in items if isinstance(i, AmiEvent)) + 30 * 86400
    consumer = CallConsumer(queue, engine, lab_settings, keep_raw_days=40, clock=lambda: later)
    for item in items:
        queue.put_nowait(item)
    await _run_until_idle(consumer, queue)
    async with engine.connect() as conn:
        n = (await conn.execute(sa.select(sa.func.count()).select_from(raw_events))).scalar_one()
    assert n == sum(1 for i in items if isinstance(i, AmiEvent))
    async with engine.begin() as conn:
        assert await store.purge_raw_events(conn, 10, now=datetime.fromtimestamp(later, UTC)) == n


async def test_database_outage_loses_nothing(tmp_path: Path, traces: Path) -> None:
    """Writes that fail are kept and retried with the next batch; hooks wait for the save."""
    from pbx_bridge.db import migrate
    from pbx_bridge.db.engine import make_engine

    db = tmp_path / "x.sqlite3"
    engine = make_engine(f"sqlite+aiosqlite:///{db}")
    await migrate.upgrade(engine)
    async with engine.begin() as conn:  # the table is missing for a while
        await conn.execute(sa.text("ALTER TABLE call_legs RENAME TO call_legs_away"))
    queue: asyncio.Queue[QueueItem] = asyncio.Queue()
    recorder = Recorder(engine)
    consumer = CallConsumer(queue, engine, lab_settings, [recorder], retry_delay=0.01)
    task = asyncio.create_task(consumer.run())
    for item in load_items(traces, "inbound_answered"):
        queue.put_nowait(item)
    await asyncio.wait_for(queue.join(), 30)
    await asyncio.sleep(0.05)
    assert consumer.save_errors > 0 and recorder.seen == []
    async with engine.begin() as conn:
        await conn.execute(sa.text("ALTER TABLE call_legs_away RENAME TO call_legs"))
    queue.put_nowait(ConnectionUp(pbx="lab", at=0.0))  # any item: the next batch retries
    await asyncio.wait_for(queue.join(), 30)
    await consumer.stop()
    await asyncio.wait_for(task, 30)
    assert [c.kind for c in recorder.seen][-1] == "ended" and all(recorder.saved_before)
    async with engine.connect() as conn:
        (rec,) = await store.list_calls(conn)
    check_record(rec, EXPECTED["inbound_answered"])
    await engine.dispose()


def test_tracker_settings_from_configuration() -> None:
    lookup = tracker_settings_for(
        [PbxConfig(name="main", inbound_contexts=["from-pstn"])],
        PhoneConfig(default_region="KZ", max_extension_length=4),
    )
    s = lookup("main")
    assert s is not None and s.pbx == "main" and s.inbound_contexts == frozenset({"from-pstn"})
    assert s.default_region == "KZ" and s.operator_channel.match("PJSIP/101-0000001")
    assert lookup("other") is None
    fallback = tracker_settings_for([], PhoneConfig(), default=PbxConfig(name="sim"))
    assert fallback("simulator") is not None


@pytest.fixture(autouse=True)
def _quiet_hook_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("CRITICAL", logger="pbx_bridge.calls")


async def test_an_item_that_breaks_does_not_stop_the_others(engine: AsyncEngine, traces: Path) -> None:
    def settings_or_fail(name: str) -> TrackerSettings | None:
        if name == "broken":
            raise ValueError("bad operator pattern")
        return lab_settings(name)

    queue: asyncio.Queue[QueueItem] = asyncio.Queue()
    consumer = CallConsumer(queue, engine, settings_or_fail)
    good = load_items(traces, "inbound_noanswer")
    bad = load_items(traces, "inbound_busy", pbx="broken")
    for a, b in zip(good, bad, strict=False):
        queue.put_nowait(a)
        queue.put_nowait(b)
    for item in good[len(bad) :]:
        queue.put_nowait(item)
    await _run_until_idle(consumer, queue)
    assert consumer.item_errors == min(len(good), len(bad))
    async with engine.connect() as conn:
        (rec,) = await store.list_calls(conn)
    check_record(rec, EXPECTED["inbound_noanswer"])


class PrepareFails:
    """A batch-preparing hook whose batch step breaks: its per-change step must still run."""

    def __init__(self) -> None:
        self.prepared = 0
        self.seen: list[CallChange] = []

    async def prepare(self, changes: Sequence[CallChange]) -> None:
        self.prepared += 1
        raise RuntimeError("batch step broke")

    async def on_change(self, change: CallChange) -> None:
        self.seen.append(change)


async def test_a_failing_batch_step_falls_back_to_each_change(engine: AsyncEngine, traces: Path) -> None:
    queue: asyncio.Queue[QueueItem] = asyncio.Queue()
    hook, recorder = PrepareFails(), Recorder(engine)
    consumer = CallConsumer(queue, engine, lab_settings, [hook, recorder])
    for item in load_items(traces, "inbound_answered"):
        queue.put_nowait(item)
    await _run_until_idle(consumer, queue)
    assert hook.prepared == consumer.hook_errors > 0
    assert [c.kind for c in hook.seen] == [c.kind for c in recorder.seen]
    assert hook.seen[-1].kind == "ended"


class Order:
    """Which call's change each hook call was for, in order."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    async def on_change(self, change: CallChange) -> None:
        self.seen.append((change.record.linkedid, change.kind))


def _until(items: list[QueueItem], kind: str) -> list[QueueItem]:
    """The call's events up to the first that gives a change of this kind."""
    tracker = CallTracker(settings_for("lab"))
    for n, item in enumerate(items):
        assert isinstance(item, AmiEvent)
        if any(c.kind == kind for c in tracker.feed(item)):
            return items[:n + 1]
    raise AssertionError(f"no {kind} change")


async def test_a_ringing_call_is_hooked_before_the_other_calls_of_its_batch(
        engine: AsyncEngine, traces: Path) -> None:
    """Under load one batch holds many calls: the one ringing an operator (its screen pop) must
    not wait behind the others' hooks; each call's own changes stay in order."""
    queue: asyncio.Queue[QueueItem] = asyncio.Queue()
    order = Order()
    consumer = CallConsumer(queue, engine, lab_settings, [order])
    # A call that has started and not yet rung anyone, then one up to its first ring.
    quiet = _until([i for i in load_items(traces, "inbound_busy") if isinstance(i, AmiEvent)],
                   "ringing")[:-1]
    ringing = _until([i for i in load_items(traces, "inbound_noanswer") if isinstance(i, AmiEvent)],
                     "ringing")
    # All queued before the pipeline starts: one batch, the quiet call's start first.
    for item in [*rewrite_ids(quiet, "quiet-"), *rewrite_ids(ringing, "ring-")]:
        queue.put_nowait(item)
    await _run_until_idle(consumer, queue)
    assert consumer.batches == 1
    kinds = [(linkedid.split("-")[0], kind) for linkedid, kind in order.seen]
    assert ("ring", "ringing") in kinds and ("quiet", "started") in kinds
    assert kinds.index(("ring", "ringing")) < kinds.index(("quiet", "started"))
    ring_kinds = [kind for who, kind in kinds if who == "ring"]
    assert ring_kinds[0] == "started" and "ringing" in ring_kinds
