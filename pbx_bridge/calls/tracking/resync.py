"""Resync and restore: after a (re)login, the CoreShowChannels snapshot is the truth (calls not
in it ended while we were away; calls we did not know are picked up from what it shows); after a
restart, the calls the database still has live are followed again (`restore`).
"""

from __future__ import annotations

from pbx_bridge.ami.events import AmiEvent, ChannelsSnapshot
from pbx_bridge.calls.record import CallRecord, Leg
from pbx_bridge.calls.tracking.answering import ring
from pbx_bridge.calls.tracking.bridges import answer_from_bridge
from pbx_bridge.calls.tracking.channels import channel_gone, merge, touch
from pbx_bridge.calls.tracking.reporting import after_event, end
from pbx_bridge.calls.tracking.rules import VALID_DIRECTIONS, public_sig, record
from pbx_bridge.calls.tracking.state import (
    MAX_FIELD,
    Call,
    Channel,
    LegState,
    P,
    TrackerState,
    leg_key,
    valid_ts,
)


def duration_seconds(text: str) -> float:
    """CoreShowChannel `Duration: HH:MM:SS` -> seconds (0 when unreadable)."""
    try:
        parts = [int(p) for p in text.split(":")]
    except ValueError:
        return 0.0
    total = 0
    for p in parts[-3:]:
        total = total * 60 + p
    return float(total) if 0 <= total < 10 * 86400 else 0.0


def resync(st: TrackerState, snapshot: ChannelsSnapshot) -> None:
    """See CallTracker.resync; the changes go to `st.changes`."""
    at = snapshot.at if valid_ts(snapshot.at) else st.last_ts
    by_linkedid: dict[str, list[AmiEvent]] = {}
    present: set[str] = set()
    for ev in snapshot.channels:
        uid = ev.headers.get("Uniqueid")
        linkedid = ev.headers.get("Linkedid")
        if not uid or not linkedid or len(uid) > MAX_FIELD or len(linkedid) > MAX_FIELD:
            continue
        present.add(uid)
        by_linkedid.setdefault(st.alias.get(linkedid, linkedid), []).append(ev)
    _join_bridged(st, by_linkedid)
    for call in list(st.calls.values()):
        if call.linkedid in by_linkedid or any(uid in present for uid in call.live):
            continue
        end(st, call, call.last_ts, outage=True)
    for linkedid, events in by_linkedid.items():
        if linkedid in st.ended:
            continue
        try:
            _resync_call(st, linkedid, events, at, present)
        except Exception:  # noqa: S112 - a junk snapshot entry must not stop the others
            continue


def _join_bridged(st: TrackerState, by_linkedid: dict[str, list[AmiEvent]]) -> None:
    """Channels of two Linkedids in one bridge are one call (Asterisk gives them the oldest
    Linkedid; a snapshot taken just then may still show the newer one on one of them)."""
    by_bridge: dict[str, list[str]] = {}
    for linkedid, events in by_linkedid.items():
        for ev in events:
            bridge = ev.headers.get("BridgeId", "")
            if bridge and linkedid not in by_bridge.setdefault(bridge, []):
                by_bridge[bridge].append(linkedid)
    for linkedids in by_bridge.values():
        alive = [lid for lid in linkedids if lid in by_linkedid]
        if len(alive) < 2:
            continue

        def age(lid: str) -> tuple[int, float]:
            known = st.calls.get(lid)
            if known is not None:
                return (0, known.started_at)
            return (1, -max(duration_seconds(e.headers.get("Duration", ""))
                            for e in by_linkedid[lid]))

        keep, *others = sorted(alive, key=age)
        for other in others:
            for ev in by_linkedid.pop(other):
                headers = dict(ev.headers)
                headers["Linkedid"] = keep
                by_linkedid[keep].append(AmiEvent(ev.pbx, ev.name, headers, ev.variables,
                                                  ev.received_at, ev.seq))
            src, dst = st.calls.get(other), st.calls.get(keep)
            if src is not None and dst is not None:
                merge(st, src, dst)
            elif src is not None:
                st.alias[other] = keep


def _resync_call(st: TrackerState, linkedid: str, events: list[AmiEvent], at: float,
                 present: set[str]) -> None:
    call = st.calls.get(linkedid)
    known = call is not None
    if call is not None:
        # Channels we thought alive that Asterisk no longer has went during the outage.
        for uid in [u for u in call.live if u not in present]:
            channel_gone(st, call, call.channels[uid], call.last_ts, None)
    # Origin first: the channel that started the call decides its direction.
    events = sorted(events, key=lambda e: e.headers.get("Uniqueid") != linkedid)
    if not known and not valid_ts(at):
        return  # a call we cannot time: leave it to the events
    for ev in events:
        created = at - duration_seconds(ev.headers.get("Duration", ""))
        if call is not None and created < call.started_at:
            # Duration is whole seconds and `at` is when the answer arrived: never let
            # it move a known call's start.
            created = call.started_at
        ch = touch(st, ev, created, P, True)
        if ch is None:
            continue
        call = ch.call
        if ev.headers.get("ChannelState") == "6" and not ch.up:
            ch.up = True
            if ch.leg.leg.answered_at is None and not known:
                ch.leg.leg.answered_at = created
        bridge = ev.headers.get("BridgeId", "")
        if bridge:
            call.bridges[ch.uid] = bridge
        else:
            call.bridges.pop(ch.uid, None)
    if call is None:
        return
    if at > call.last_ts:
        call.last_ts = at
    if not known:
        # Nothing tells how the call began but the snapshot: a dialled operator is rung;
        # on an operator's call, the other party is the customer.
        origin = call.channels.get(call.origin_uid or "")
        for ch in list(call.channels.values()):
            if ch is origin or ch.name.endswith(";2") or (origin and ch.leg is origin.leg):
                continue
            if ch.ext is not None:
                call.operator_dest = True
                ring(st, call, ch)
            elif origin is not None and origin.ext is not None:
                call.external_dest = True
                if call.customer_uid is None:
                    call.customer_uid = ch.uid
    if call.answered_at is None:
        for bridge in set(call.bridges.values()):
            members = [call.channels[u] for u, b in call.bridges.items() if b == bridge]
            if len({id(m.leg) for m in members}) >= 2:
                answered = max((m.leg.leg.created_at for m in members), default=at)
                answer_from_bridge(st, call, bridge, answered if not known else at)
                break
    if not call.live:
        end(st, call, call.last_ts, outage=True)
        return
    after_event(st, call)


def restore(st: TrackerState, records: list[CallRecord]) -> None:
    """See CallTracker.restore."""
    for rec in records:
        if rec.ended_at is not None or rec.linkedid in st.calls:
            continue
        call = Call(rec.linkedid, rec.started_at)
        call.fixed = rec
        call.id = rec.id
        call.direction_var = rec.direction if rec.direction in VALID_DIRECTIONS else None
        call.operator = rec.operator
        call.operators_rung = list(rec.operators_rung)
        call.queue = rec.queue
        call.transfers = list(rec.transfers)
        call.answered_at = rec.answered_at
        call.click_to_call_id = rec.click_to_call_id
        call.started_emitted = True
        for leg in rec.legs:
            state = LegState(Leg(**vars(leg)))
            call.legs[leg_key(leg.channel, leg.uniqueid)] = state
            if leg.hungup_at is None and leg.uniqueid not in st.channels:
                ch = Channel(call, leg.uniqueid, leg.channel, leg.extension, state)
                call.channels[leg.uniqueid] = ch
                call.live.add(leg.uniqueid)
                state.live.add(leg.uniqueid)
                st.channels[leg.uniqueid] = ch
                if leg.uniqueid == rec.linkedid:
                    call.origin_uid = leg.uniqueid
        # The last time anything was known of it: what an outage end time falls back to.
        call.last_ts = max(t for t in [rec.started_at, rec.answered_at,
                                       *(leg.created_at for leg in rec.legs),
                                       *(leg.answered_at for leg in rec.legs),
                                       *(leg.hungup_at for leg in rec.legs)]
                           if t is not None)
        st.calls[rec.linkedid] = call
        call.public_sig = public_sig(record(st, call))
