"""Call records in SQLite and PostgreSQL: live then ended, upserts that never duplicate, readers."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from pbx_bridge.ami.events import AmiEvent
from pbx_bridge.calls import store
from pbx_bridge.calls.changes import CallChange
from pbx_bridge.calls.record import RECORD_FIELDS, CallRecord, Leg, Transfer
from pbx_bridge.calls.tracker import CallTracker
from pbx_bridge.commands.calls_cmd import format_table
from pbx_bridge.db.schema import call_legs, calls, raw_events
from tests.tracker_support import EXPECTED, check_record, feed_all, load_items, settings_for

ROOT = Path(__file__).resolve().parent.parent


def _changes(traces: Path, name: str) -> list[CallChange]:
    return feed_all(CallTracker(settings_for(name)), load_items(traces, name))


async def _count(engine: AsyncEngine, table: sa.Table) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(sa.select(sa.func.count()).select_from(table))).scalar_one())


async def test_live_then_ended(engine: AsyncEngine, traces: Path) -> None:
    changes = _changes(traces, "inbound_answered")
    ids = set()
    for change in changes:
        async with engine.begin() as conn:
            await store.save_changes(conn, [change])
        ids.add(change.record.id)
        async with engine.connect() as conn:
            row = (await conn.execute(sa.select(calls))).one()
        assert row.state == ("ended" if change.kind == "ended" else "live")
    assert len(ids) == 1 and None not in ids
    async with engine.connect() as conn:
        rec = await store.get_call(conn, ids.pop())
    assert rec is not None
    check_record(rec, EXPECTED["inbound_answered"])
    assert rec.started_at == changes[-1].record.started_at
    assert [(leg.role, leg.extension) for leg in rec.legs] == [("customer", None), ("operator", "101")]
    assert rec.legs[1].channel == "Local/101@operators-00000003;1"
    assert all(leg.hungup_at is not None for leg in rec.legs)


async def test_a_live_call_is_visible_as_live(engine: AsyncEngine, traces: Path) -> None:
    changes = _changes(traces, "queue_ringall_answered")
    upto = next(i for i, c in enumerate(changes) if c.kind == "answered")
    async with engine.begin() as conn:
        await store.save_changes(conn, changes[: upto + 1])
    async with engine.connect() as conn:
        live = await store.load_live(conn, "lab")
        assert await store.load_live(conn, "other") == []
        listed = await store.list_calls(conn, live=True)
    assert len(live) == 1 and listed[0].id == live[0].id
    rec = live[0]
    assert rec.live and rec.status is None and rec.operator == "102" and rec.queue == "sales"
    assert rec.answered_at is not None and rec.operators_rung == ["101", "102"]


async def test_replaying_the_same_changes_never_duplicates(engine: AsyncEngine, traces: Path) -> None:
    changes = _changes(traces, "click_to_call")
    for _ in range(2):
        async with engine.begin() as conn:
            await store.save_changes(conn, changes)
    for change in changes:  # and one by one again
        async with engine.begin() as conn:
            await store.save_changes(conn, [change])
    assert await _count(engine, calls) == 1
    assert await _count(engine, call_legs) == 2
    async with engine.connect() as conn:
        (rec,) = await store.list_calls(conn)
    assert rec.ended_at is not None
    check_record(rec, EXPECTED["click_to_call"])
    assert {c.record.id for c in changes} == {rec.id}


async def test_ended_row_is_final(engine: AsyncEngine, traces: Path) -> None:
    changes = _changes(traces, "inbound_busy")
    async with engine.begin() as conn:
        await store.save_changes(conn, changes)
    late_live = changes[0]  # the `started` snapshot: live, no status
    async with engine.begin() as conn:
        await store.save_changes(conn, [late_live])
    async with engine.connect() as conn:
        (row,) = (await conn.execute(sa.select(calls))).all()
        (rec,) = await store.list_calls(conn)
    assert row.state == "ended" and rec.status == "busy" and rec.missed


async def test_every_trace_round_trips(engine: AsyncEngine, traces: Path) -> None:
    for name in EXPECTED:
        async with engine.begin() as conn:
            await store.save_changes(conn, _changes(traces, name))
    async with engine.connect() as conn:
        records = {r.linkedid: r for r in await store.list_calls(conn, limit=100)}
    assert len(records) == len(EXPECTED)
    for name in EXPECTED:
        rec = next(c.record for c in _changes(traces, name) if c.kind == "ended")
        check_record(records[rec.linkedid], EXPECTED[name])


async def test_merged_record_is_dropped_and_transfers_round_trip(engine: AsyncEngine) -> None:
    t0 = 1_800_000_000.0
    main = CallRecord(
        pbx="p",
        linkedid="a",
        started_at=t0,
        direction="inbound",
        transfers=[Transfer("attended", t0 + 5, "101", "102")],
        legs=[Leg("a", "PJSIP/trunk-1", "customer", None, t0)],
    )
    consult = CallRecord(
        pbx="p",
        linkedid="b",
        started_at=t0 + 3,
        direction="internal",
        legs=[Leg("b", "PJSIP/101-2", "operator", "101", t0 + 3)],
    )
    async with engine.begin() as conn:
        await store.save_changes(conn, [CallChange("started", main), CallChange("started", consult)])
    gone = CallRecord(pbx="p", linkedid="b", started_at=t0 + 3, merged_into="a")
    async with engine.begin() as conn:
        await store.save_changes(conn, [CallChange("updated", gone)])
    async with engine.connect() as conn:
        records = await store.list_calls(conn)
    assert [r.linkedid for r in records] == ["a"]
    assert [(t.kind, t.at, t.from_operator, t.to_operator) for t in records[0].transfers] == [
        ("attended", t0 + 5, "101", "102")
    ]
    assert await _count(engine, call_legs) == 1


async def test_leg_renamed_to_its_first_half_replaces_the_old_row(engine: AsyncEngine) -> None:
    t0 = 1_800_000_000.0
    rec = CallRecord(
        pbx="p", linkedid="a", started_at=t0, legs=[Leg("u;2", "Local/101@x-1;2", "operator", "101", t0)]
    )
    async with engine.begin() as conn:
        await store.save_changes(conn, [CallChange("started", rec)])
    rec.legs = [Leg("u", "Local/101@x-1;1", "operator", "101", t0)]
    async with engine.begin() as conn:
        await store.save_changes(conn, [CallChange("updated", rec)])
    async with engine.connect() as conn:
        (got,) = await store.list_calls(conn)
    assert [leg.channel for leg in got.legs] == ["Local/101@x-1;1"]


async def test_long_values_are_cut_to_the_columns(engine: AsyncEngine) -> None:
    rec = CallRecord(
        pbx="p",
        linkedid="x" * 500,
        started_at=1_800_000_000.0,
        customer_name="N" * 1000,
        dialled="9" * 300,
        queue="q" * 300,
        legs=[Leg("u" * 300, "C" * 600, "other", None, 1_800_000_000.0)],
    )
    async with engine.begin() as conn:
        await store.save_changes(conn, [CallChange("started", rec)])
    async with engine.connect() as conn:
        (got,) = await store.list_calls(conn)
    assert len(got.customer_name or "") == 255 and got.legs[0].channel == "C" * 255


async def test_list_calls_paging_and_filters(engine: AsyncEngine) -> None:
    t0 = 1_800_000_000.0
    batch = [
        CallChange("started", CallRecord(pbx="p", linkedid=f"c{i}", started_at=t0 + i)) for i in range(5)
    ]
    batch.append(
        CallChange(
            "ended",
            CallRecord(pbx="q", linkedid="e", started_at=t0 + 10, ended_at=t0 + 11, status="answered"),
        )
    )
    async with engine.begin() as conn:
        await store.save_changes(conn, batch)
        first = await store.list_calls(conn, limit=3)
        assert [r.linkedid for r in first] == ["e", "c4", "c3"]
        more = await store.list_calls(conn, limit=3, before_id=first[-1].id)
        assert [r.linkedid for r in more] == ["c2", "c1", "c0"]
        assert [r.linkedid for r in await store.list_calls(conn, live=False)] == ["e"]
        assert len(await store.list_calls(conn, live=True, pbx="p")) == 5
        assert await store.get_call(conn, 999_999) is None


async def test_raw_events_kept_and_purged(engine: AsyncEngine) -> None:
    now = datetime(2027, 1, 10, tzinfo=UTC)
    old = AmiEvent(
        "p",
        "Newchannel",
        {"Linkedid": "l1", "Channel": "PJSIP/1-1"},
        {"DIRECTION": "inbound"},
        received_at=(now - timedelta(days=5)).timestamp(),
    )
    new = AmiEvent("p", "Hangup", {"Linkedid": "l1"}, received_at=(now - timedelta(hours=1)).timestamp())
    async with engine.begin() as conn:
        await store.save_raw_events(conn, [old, new])
    assert await _count(engine, raw_events) == 2
    async with engine.begin() as conn:
        assert await store.purge_raw_events(conn, 2, now=now) == 1
        (row,) = (await conn.execute(sa.select(raw_events))).all()
    assert row.name == "Hangup" and row.linkedid == "l1"


# --- `pbx-bridge calls list` -------------------------------------------------------------------


def _cli(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PBX_BRIDGE_")}
    env["PBX_BRIDGE_DATABASE__URL"] = db_url
    return subprocess.run([sys.executable, "-m", "pbx_bridge", "calls", "list", *args],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)


async def test_calls_list_command(engine: AsyncEngine, db_url: str, traces: Path) -> None:
    for name in ("inbound_noanswer", "click_to_call"):
        async with engine.begin() as conn:
            await store.save_changes(conn, _changes(traces, name))
    live = [c for c in _changes(traces, "queue_ringall_answered") if c.kind != "ended"]
    async with engine.begin() as conn:
        await store.save_changes(conn, live)
    table = await asyncio.to_thread(_cli, db_url)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:3] == ["id", "started", "(UTC)"] and len(lines) == 5
    assert "no_answer (missed)" in table.stdout and "+79035550199" in table.stdout
    (queue_line,) = [line for line in lines if "+74957654321" in line]
    assert " live " in queue_line and "(rung 101)" in queue_line  # still in progress
    as_json = await asyncio.to_thread(_cli, db_url, "--json", "--limit", "2")
    records = json.loads(as_json.stdout)
    assert len(records) == 2 and set(records[0]) == set(RECORD_FIELDS)
    only_live = json.loads((await asyncio.to_thread(_cli, db_url, "--json", "--live")).stdout)
    assert [r["queue"] for r in only_live] == ["sales"] and only_live[0]["status"] is None
    bad = await asyncio.to_thread(_cli, db_url, "--limit", "zero")
    assert bad.returncode == 2 and "not a number" in bad.stderr


def test_calls_list_empty_and_unmigrated_database(tmp_path: Path) -> None:
    empty = _cli(f"sqlite+aiosqlite:///{tmp_path / 'none.sqlite3'}")
    assert empty.returncode == 1 and "db upgrade" in empty.stderr
    assert format_table([]) == "no calls"


async def test_calls_list_into_a_pipe_closed_early(engine: AsyncEngine, db_url: str) -> None:
    """`pbx-bridge calls list | head -1`: the reader leaves after one line; the command stops
    quietly (no "Broken pipe", no traceback) with the status of a program ended by SIGPIPE."""
    now = datetime.now(UTC)
    rows = [{"pbx": "lab", "linkedid": f"pipe-{i}", "state": "ended", "direction": "inbound",
             "status": "answered", "customer_number": f"+7903555{i:04d}", "operators_rung": [],
             "transfers": [], "tags": [], "started_at": now - timedelta(seconds=i), "updated_at": now}
            for i in range(3000)]  # about 300 KB of table: far more than a pipe's buffer
    async with engine.begin() as conn:
        await conn.execute(sa.insert(calls), rows)

    def run() -> tuple[bytes, bytes, int]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PBX_BRIDGE_")}
        env["PBX_BRIDGE_DATABASE__URL"] = db_url
        with subprocess.Popen([sys.executable, "-m", "pbx_bridge", "calls", "list", "--limit", "3000"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT) as proc:
            assert proc.stdout is not None and proc.stderr is not None
            first = proc.stdout.readline()
            proc.stdout.close()  # like `head -1` exiting
            err = proc.stderr.read()
            return first, err, proc.wait(timeout=60)

    first, err, code = await asyncio.to_thread(run)
    assert first.split()[:3] == [b"id", b"started", b"(UTC)"]
    # (stderr has the log's start-up lines, nothing about the pipe.)
    assert b"Broken pipe" not in err and b"Traceback" not in err and b"Exception" not in err, err.decode()
    assert code == 128 + 13  # SIGPIPE
