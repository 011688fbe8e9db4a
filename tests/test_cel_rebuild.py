"""The same record from CEL as from AMI: every trace's CEL rows, rebuilt through the CEL -> event
adapter and the one CallTracker, give the README's record and the AMI record of the same trace,
field by field; what CEL lacks is reached another way (see pbx_bridge/cel/adapter.py)."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest

from pbx_bridge.calls.rebuild import rebuild_calls
from pbx_bridge.calls.record import CallRecord
from pbx_bridge.calls.tracker import CallTracker
from pbx_bridge.cel.grouping import group_calls
from pbx_bridge.cel.rows import CelRow, CelRowError, row_from_mapping, zone
from tests.cel_support import CSV_NAMES, csv_mappings, csv_rows, trace_cel_rows
from tests.tracker_support import EXPECTED, check_record, ended, feed_all, load_items, settings_for

# Every trace but the one the capture joined mid-call: its CEL rows begin in the middle too.
TRACE_NAMES = sorted(n for n in EXPECTED if n != "resync_mid_call")


def ami_record(traces: Path, name: str) -> CallRecord:
    return ended(feed_all(CallTracker(settings_for(name)), load_items(traces, name)))[0]


def assert_same_call(cel: CallRecord, ami: CallRecord) -> None:
    """Field by field as in the traces' README table; times to ±0.3 s."""
    assert cel.linkedid == ami.linkedid
    for name in ("direction", "status", "missed", "customer_number", "customer_name", "did",
                 "dialled", "operators_rung", "operator", "queue"):
        assert getattr(cel, name) == getattr(ami, name), name
    assert [(t.kind, t.from_operator, t.to_operator) for t in cel.transfers] == \
        [(t.kind, t.from_operator, t.to_operator) for t in ami.transfers]
    for a, b in zip(cel.transfers, ami.transfers, strict=True):
        assert abs(a.at - b.at) <= 0.3
    for name in ("started_at", "answered_at", "ended_at", "wait_seconds", "talk_seconds"):
        x, y = getattr(cel, name), getattr(ami, name)
        assert (x is None) == (y is None), name
        if x is not None:
            assert abs(x - y) <= 0.3, (name, x, y)
    assert cel.source == "cel" and not cel.ended_during_outage


@pytest.mark.parametrize("name", CSV_NAMES)
def test_cel_table_rows_give_the_readme_and_the_ami_record(traces: Path, name: str) -> None:
    rebuilt = rebuild_calls(csv_rows(name), settings_for(name))
    assert len(rebuilt.records) == 1 and rebuilt.unfinished == []
    rec = rebuilt.records[0]
    exp = EXPECTED[name]
    # CEL carries no CALL_ID: the click-to-call id comes from our own request (the Linkedid is
    # its ChannelId), not from CEL.
    check_record(rec, dataclasses.replace(exp, click_to_call_id=None))
    assert_same_call(rec, ami_record(traces, name))


def test_the_pickup_is_one_call_though_its_rows_are_under_two_linkedids() -> None:
    rows = csv_rows("sip_pickup")
    assert len({r.linkedid for r in rows}) == 2
    groups = group_calls(rows)
    assert len(groups) == 1 and len(groups[0]) == len(rows)
    rebuilt = rebuild_calls(rows, settings_for("sip_pickup"))
    assert rebuilt.merged == {"pbx-1796481310.261": "pbx-1796481308.259"}
    assert [r.linkedid for r in rebuilt.records] == ["pbx-1796481308.259"]


@pytest.mark.parametrize("name", TRACE_NAMES)
def test_the_cel_events_of_every_trace_give_the_ami_record(traces: Path, name: str) -> None:
    """The lab traces' CEL has no APP_START rows (their cel.conf had no `apps`): who dialled
    whom comes from the rows of the whole call instead."""
    rebuilt = rebuild_calls(trace_cel_rows(name), settings_for(name))
    assert len(rebuilt.records) == 1
    assert_same_call(rebuilt.records[0], ami_record(traces, name))


@pytest.mark.parametrize("name", CSV_NAMES)
def test_without_app_start_rows_the_record_is_the_same(traces: Path, name: str) -> None:
    rows = [r for r in csv_rows(name) if r.eventtype != "APP_START"]
    assert_same_call(rebuild_calls(rows, settings_for(name)).records[0], ami_record(traces, name))


def test_a_queue_without_app_start_still_names_its_queue_from_the_rows(traces: Path) -> None:
    # The lab's rows show the caller in Queue(sales,...) on its BRIDGE_ENTER: the queue is known.
    rec = rebuild_calls(trace_cel_rows("queue_ringall_answered"), settings_for("x")).records[0]
    assert rec.queue == "sales"


def test_rows_in_any_order_give_the_same_record(traces: Path) -> None:
    rows = csv_rows("sip_attended_transfer")
    want = rebuild_calls(rows, settings_for("sip_")).records[0].to_dict()
    rng = random.Random(7)
    for _ in range(5):
        shuffled = rows[:]
        rng.shuffle(shuffled)
        assert rebuild_calls(shuffled, settings_for("sip_")).records[0].to_dict() == want


def test_calls_still_going_are_unfinished_not_records() -> None:
    rows = [r for r in csv_rows("sip_inbound_answered_cel")
            if r.eventtype not in ("LINKEDID_END",) and r.eventtime < 1796481222.0]
    rebuilt = rebuild_calls(rows, settings_for("sip_"))
    assert rebuilt.records == [] and rebuilt.unfinished == ["pbx-1796481217.224"]


def test_several_calls_at_once_each_give_their_record(traces: Path) -> None:
    rows: list[CelRow] = []
    for name in CSV_NAMES:
        rows += csv_rows(name)
    rebuilt = rebuild_calls(rows, settings_for("sip_"))
    want = sorted(ami_record(traces, n).linkedid for n in CSV_NAMES)
    assert sorted(r.linkedid for r in rebuilt.records) == want


def test_bad_rows_are_errors_or_ignored_never_a_crash() -> None:
    base = csv_mappings("sip_inbound_answered_cel")
    with pytest.raises(CelRowError):
        row_from_mapping({**base[0], "uniqueid": ""}, zone("UTC"))
    with pytest.raises(CelRowError):
        row_from_mapping({**base[0], "eventtime": "yesterday"}, zone("UTC"))
    rows = [row_from_mapping(m, zone("UTC")) for m in base]
    junk = [
        row_from_mapping({**base[1], "eventtype": "SOMETHING_NEW"}, zone("UTC")),
        row_from_mapping({**base[9], "extra": "{not json"}, zone("UTC")),
        row_from_mapping({**base[6], "extra": "[1, 2]", "eventtype": "PICKUP"}, zone("UTC")),
    ]
    rec = rebuild_calls(rows + junk, settings_for("sip_")).records[0]
    check_record(rec, EXPECTED["sip_inbound_answered_cel"])


def test_local_time_rows_read_in_the_pbx_zone() -> None:
    """A PBX writing local time (Europe/Moscow, UTC+3): read with cel_timezone, the same instant."""
    utc = row_from_mapping(csv_mappings("sip_pickup")[0], zone("UTC"))
    local = {**csv_mappings("sip_pickup")[0], "eventtime": "2026-12-05 17:35:08.892841"}
    assert row_from_mapping(local, zone("Europe/Moscow")).eventtime == pytest.approx(utc.eventtime)
