"""The tracker on the real Asterisk traces: the README's record for each, however the events
arrive (duplicated, cut by a reconnect with a CoreShowChannels answer, interleaved)."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pbx_bridge.ami.events import AmiEvent, ChannelsSnapshot
from pbx_bridge.calls.queue import QueueItem
from pbx_bridge.calls.record import CallRecord
from pbx_bridge.calls.tracker import CallTracker
from tests.conftest import TRACES
from tests.tracker_support import (
    EXPECTED,
    ChannelTable,
    check_record,
    close,
    ended,
    feed_all,
    load_items,
    rewrite_ids,
    settings_for,
    summary,
)

NAMES = sorted(EXPECTED)


@pytest.mark.parametrize("name", NAMES)
def test_trace_gives_the_readme_record(traces: Path, name: str) -> None:
    tracker = CallTracker(settings_for(name))
    changes = feed_all(tracker, load_items(traces, name))
    records = ended(changes)
    assert len(records) == 1, [c.kind for c in changes]
    check_record(records[0], EXPECTED[name])
    rec = records[0]
    # A channel that began as a call of its own and joined this one (the pickup's originated
    # phone) reports its own few changes before it is merged; the call's own changes are these.
    own = [c for c in changes if c.record.linkedid == rec.linkedid]
    others = {c.record.linkedid: c.record for c in changes if c not in own}
    assert all(last.merged_into == rec.linkedid for last in others.values())
    kinds = [c.kind for c in own]
    assert kinds[0] == "started" and kinds.count("started") == 1
    assert kinds[-1] == "ended"
    assert tracker.live_calls() == []
    if rec.status == "answered":
        assert kinds.count("answered") == 1
        answered = next(c for c in own if c.kind == "answered")
        transfers = EXPECTED[name].transfers
        # The first to answer: the operator the first transfer took the call from (a pickup is
        # itself the answer).
        first = EXPECTED[name].operator
        if transfers:
            kind, from_op, to_op = transfers[0]
            first = to_op if kind == "pickup" else from_op
        assert answered.extension == first
    for ext in EXPECTED[name].rung:
        assert any(c.kind == "ringing" and c.extension == ext for c in changes)
    # `updated` only when the public record changed.
    for prev, change in itertools.pairwise(changes):
        if change.kind == "updated" and not change.record.merged_into:  # a merge is news too
            assert _public(change.record) != _public(prev.record)


def _public(rec: CallRecord) -> dict[str, object]:
    data = rec.to_dict()
    for key in ("wait_seconds", "talk_seconds", "ended_at", "status", "missed"):
        data.pop(key)
    return data


@pytest.mark.parametrize("name", NAMES)
def test_legs_name_the_answering_operator_channel(traces: Path, name: str) -> None:
    rec = ended(feed_all(CallTracker(settings_for(name)), load_items(traces, name)))[0]
    # Local channel halves ;1/;2 are one leg: each party once.
    channels = [leg.channel for leg in rec.legs]
    assert not any(c.endswith(";2") for c in channels), channels
    if rec.status == "answered" and rec.direction != "outbound":
        op_legs = [leg for leg in rec.legs if leg.role == "operator" and leg.extension == rec.operator]
        assert op_legs and op_legs[-1].answered_at is not None
    if rec.direction != "internal":
        assert [leg.role for leg in rec.legs].count("customer") == 1
    for leg in rec.legs:
        assert leg.hungup_at is not None and leg.created_at <= leg.hungup_at


def test_recorded_call_operator_leg_is_what_mixmonitor_recorded(traces: Path) -> None:
    rec = ended(feed_all(CallTracker(settings_for("x")), load_items(traces, "inbound_answered_recorded")))[0]
    leg = next(leg for leg in rec.legs if leg.extension == rec.operator)
    assert leg.channel == "Local/101@operators-00000005;1"
    sip = ended(
        feed_all(CallTracker(settings_for("sip_")), load_items(traces, "sip_inbound_answered_recorded"))
    )[0]
    assert next(leg for leg in sip.legs if leg.extension == "101").channel == "PJSIP/101-00000001"


def test_sip_direction_comes_from_who_started_the_call(traces: Path) -> None:
    """Without the DIRECTION variable: the trunk channel that started the call in an inbound
    context makes it inbound."""
    items = load_items(traces, "sip_inbound_answered_recorded")
    for item in items:
        if isinstance(item, AmiEvent):
            item.variables.pop("DIRECTION", None)
        elif isinstance(item, ChannelsSnapshot):
            for ev in item.channels:
                ev.variables.pop("DIRECTION", None)
    rec = ended(feed_all(CallTracker(settings_for("sip_")), items))[0]
    check_record(rec, EXPECTED["sip_inbound_answered_recorded"])


@pytest.mark.parametrize("name", [n for n in NAMES if n != "resync_mid_call"])
def test_direction_without_the_dialplan_variable(traces: Path, name: str) -> None:
    items = load_items(traces, name)
    for item in items:
        if isinstance(item, AmiEvent):
            item.variables.pop("DIRECTION", None)
        elif isinstance(item, ChannelsSnapshot):
            for ev in item.channels:
                ev.variables.pop("DIRECTION", None)
    rec = ended(feed_all(CallTracker(settings_for(name)), items))[0]
    check_record(rec, EXPECTED[name])


@pytest.mark.parametrize("name", NAMES)
def test_duplicated_events_are_harmless(traces: Path, name: str) -> None:
    items = load_items(traces, name)
    alone = ended(feed_all(CallTracker(settings_for(name)), items))
    doubled: list[QueueItem] = []
    for item in items:
        doubled += [item, item]
    changes = feed_all(CallTracker(settings_for(name)), doubled)
    twice = ended(changes)
    assert len(twice) == 1
    check_record(twice[0], EXPECTED[name])
    assert close(summary(twice[0]), summary(alone[0]))
    assert [c.kind for c in changes if c.record.linkedid == twice[0].linkedid].count("started") == 1


def _cut_with_snapshot(items: list[QueueItem], k: int, pbx: str) -> list[QueueItem]:
    """The events up to k, then what CoreShowChannels would answer at that moment, then the
    rest (a reconnect that lost nothing, or the duplicate answer around one)."""
    table = ChannelTable()
    out: list[QueueItem] = []
    at = 0.0
    for item in items[:k]:
        out.append(item)
        if isinstance(item, AmiEvent):
            table.apply(item)
            at = item.timestamp or at
        elif isinstance(item, ChannelsSnapshot):
            table.apply_snapshot(item)
    if at:
        out.append(table.snapshot(pbx, at))
    return out + items[k:]


@pytest.mark.parametrize("name", NAMES)
def test_cut_anywhere_by_a_snapshot(traces: Path, name: str) -> None:
    items = load_items(traces, name)
    alone = summary(ended(feed_all(CallTracker(settings_for(name)), items))[0])
    rng = random.Random(name)
    cuts = sorted({rng.randrange(1, len(items)) for _ in range(25)} | {1, len(items) - 1})
    for k in cuts:
        changes = feed_all(CallTracker(settings_for(name)), _cut_with_snapshot(items, k, "lab"))
        records = ended(changes)
        assert len(records) == 1, (k, [c.kind for c in changes])
        assert close(summary(records[0]), alone), (k, summary(records[0]), alone)
        check_record(records[0], EXPECTED[name])


@pytest.mark.parametrize("name", [n for n in NAMES if n != "resync_mid_call"])
def test_joining_mid_call_from_the_snapshot_alone(traces: Path, name: str) -> None:
    """A bridge that starts while the call is up sees only the snapshot and the rest: it still
    makes one record of it, with the same identity and end."""
    items = load_items(traces, name)
    full = ended(feed_all(CallTracker(settings_for(name)), items))[0]
    rng = random.Random(name + "join")
    for k in sorted({rng.randrange(1, len(items)) for _ in range(12)}):
        table = ChannelTable()
        at = 0.0
        for item in items[:k]:
            if isinstance(item, AmiEvent):
                table.apply(item)
                at = item.timestamp or at
        if not table.channels or not at:
            continue
        linkedids = {c["headers"].get("Linkedid") for c in table.channels.values()}
        changes = feed_all(CallTracker(settings_for(name)), [table.snapshot("lab", at), *items[k:]])
        records = ended(changes)
        if full.linkedid not in linkedids:
            continue
        assert len(records) == 1, (k, [c.kind for c in changes])
        rec = records[0]
        assert rec.linkedid == full.linkedid
        assert abs((rec.ended_at or 0) - (full.ended_at or 0)) <= 0.3
        origin_alive = full.linkedid in table.channels
        if origin_alive and rec.direction != "unknown":
            assert rec.direction == full.direction
            assert rec.customer_number == full.customer_number
        if full.answered_at is not None and k > 0 and rec.answered_at is None:
            # Answered before the join, yet not seen as such, only when no two parties are
            # left in one bridge for the snapshot to show it.
            bridges = [c["bridge"] for c in table.channels.values() if c["bridge"]]
            assert len(bridges) == len(set(bridges)), k


def test_resync_mid_call_is_one_answered_inbound_call_ending_at_the_last_hangup(traces: Path) -> None:
    items = load_items(traces, "resync_mid_call")
    assert isinstance(items[1], ChannelsSnapshot)  # after FullyBooted
    changes = feed_all(CallTracker(settings_for("resync_mid_call")), items)
    rec = ended(changes)[0]
    hangups = [i.timestamp for i in items if isinstance(i, AmiEvent) and i.name == "Hangup"]
    assert rec.ended_at is not None and abs(rec.ended_at - max(hangups)) < 0.01
    assert rec.started_at < min(hangups) - 4  # the snapshot's Duration: 5 s before it
    assert rec.status == "answered" and rec.direction == "inbound" and not rec.ended_during_outage


# --- interleaved calls ---------------------------------------------------------------------

_INTERLEAVABLE = [n for n in NAMES if n != "resync_mid_call"]


def _events_only(items: list[QueueItem]) -> list[QueueItem]:
    # A trace's own CoreShowChannels answer only lists its call: in a mix it would end the
    # others, which a real answer would list too.
    return [i for i in items if isinstance(i, AmiEvent)]


_CACHE: dict[str, list[QueueItem]] = {}


def _items(name: str) -> list[QueueItem]:
    if name not in _CACHE:
        _CACHE[name] = _events_only(load_items(TRACES, name))
    return _CACHE[name]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    names=st.lists(st.sampled_from(_INTERLEAVABLE), min_size=2, max_size=4),
    seed=st.integers(0, 2**32 - 1),
)
def test_interleaved_calls_give_the_same_records(names: list[str], seed: int) -> None:
    streams = [rewrite_ids(_items(n), f"c{i}-") for i, n in enumerate(names)]
    settings_ = settings_for("lab")
    expected = {}
    for stream in streams:
        rec = ended(feed_all(CallTracker(settings_), stream))[0]
        expected[rec.linkedid] = summary(rec)
    rng = random.Random(seed)
    positions = [0] * len(streams)
    mixed: list[QueueItem] = []
    while any(p < len(s) for p, s in zip(positions, streams, strict=True)):
        i = rng.choice([i for i, s in enumerate(streams) if positions[i] < len(s)])
        mixed.append(streams[i][positions[i]])
        positions[i] += 1
    records = ended(feed_all(CallTracker(settings_), mixed))
    got = {r.linkedid: summary(r) for r in records}
    assert len(records) == len(streams)
    assert set(got) == set(expected)
    for linkedid, want in expected.items():
        assert close(got[linkedid], want), (linkedid, got[linkedid], want)


@pytest.mark.parametrize("name", NAMES)
def test_reconnect_that_lost_events(traces: Path, name: str) -> None:
    """Events k..m lost while disconnected, then the CoreShowChannels answer at m, then the
    rest: one record at most; a call still up at m ends as it would have; one that ended in
    the gap is closed as ended during the outage, never twice."""
    items = load_items(traces, name)
    full_changes = feed_all(CallTracker(settings_for(name)), items)
    full = ended(full_changes)[0]
    # Linkedids that joined the call (the pickup's originated phone): when the events that join
    # them are lost in the gap, each stays a call of its own, ended during the outage (a CEL
    # backfill merges it: tests/test_cel_backfill.py).
    joined = {c.record.linkedid for c in full_changes if c.record.merged_into == full.linkedid}
    rng = random.Random(name + "lossy")
    for _ in range(20):
        k = rng.randrange(1, len(items) - 1)
        m = rng.randrange(k, len(items))
        table = ChannelTable()
        seen_before_gap = False
        at = 0.0
        for idx, item in enumerate(items[:m]):
            if isinstance(item, AmiEvent):
                table.apply(item)
                at = item.timestamp or at
                if idx < k and item.headers.get("Linkedid") == full.linkedid:
                    seen_before_gap = True
            elif isinstance(item, ChannelsSnapshot):
                table.apply_snapshot(item)
        if not at:
            continue
        stream = [*items[:k], table.snapshot("lab", at), *items[m:]]
        records = ended(feed_all(CallTracker(settings_for(name)), stream))
        strays = [r for r in records if r.linkedid in joined]
        assert all(r.ended_during_outage for r in strays), (k, m)
        records = [r for r in records if r not in strays]
        assert len(records) <= 1, (k, m)
        alive_at_m = any(c["headers"].get("Linkedid") == full.linkedid for c in table.channels.values())
        if alive_at_m:
            assert len(records) == 1, (k, m)
            rec = records[0]
            assert not rec.ended_during_outage and abs((rec.ended_at or 0) - (full.ended_at or 0)) < 0.3
            assert rec.direction in (full.direction, "unknown")
        elif seen_before_gap:
            assert len(records) == 1, (k, m)
            rec = records[0]
            assert rec.ended_during_outage or abs((rec.ended_at or 0) - (full.ended_at or 0)) < 0.3
            assert (rec.ended_at or 0) <= (full.ended_at or 0) + 0.3


@pytest.mark.parametrize("name", NAMES)
def test_a_replayed_window_of_events_is_harmless(traces: Path, name: str) -> None:
    """Events repeat around a reconnect: a stretch already seen arrives again."""
    items = load_items(traces, name)
    alone = summary(ended(feed_all(CallTracker(settings_for(name)), items))[0])
    rng = random.Random(name + "window")
    for _ in range(15):
        k = rng.randrange(1, len(items))
        j = rng.randrange(0, k)
        changes = feed_all(CallTracker(settings_for(name)), [*items[:k], *items[j:k], *items[k:]])
        records = ended(changes)
        assert len(records) == 1, (j, k)
        assert close(summary(records[0]), alone), (j, k, summary(records[0]), alone)
        kinds = [c.kind for c in changes if c.record.linkedid == records[0].linkedid]
        assert kinds.count("started") == 1 and kinds.count("answered") <= 1


@pytest.mark.parametrize(("caller", "kept"), [
    ("+79300395846", "+79300395846"),  # +7 930: a range the phone library does not know
    ("8 (930) 039-58-46", "89300395846"),
    ("<unknown>", None),
])
def test_a_caller_id_that_does_not_parse_is_kept_not_dropped(
        traces: Path, caller: str, kept: str | None) -> None:
    """Who called must never vanish from the call log because the number library rejects it:
    such a caller ID is kept as its digits; a withheld one stays empty."""
    items = []
    for item in load_items(traces, "inbound_answered"):
        if isinstance(item, AmiEvent):
            headers = {k: (caller if v == "+74951234567" else v) for k, v in item.headers.items()}
            item = AmiEvent(item.pbx, item.name, headers, item.variables, item.received_at)
        items.append(item)
    [record] = ended(feed_all(CallTracker(settings_for("inbound_answered")), items))
    assert record.customer_number == kept
    assert record.status == "answered" and record.direction == "inbound"
