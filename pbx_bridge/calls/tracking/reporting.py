"""What the tracker reports, and when: `started` once the call says what it is, one change per
ring/answer/transfer, `updated` when the public record changed, and `ended` exactly once (or
nothing, when CEL's record replaces the call: `drop`)."""

from __future__ import annotations

from pbx_bridge.calls.changes import CallChange, ChangeKind
from pbx_bridge.calls.tracking.rules import direction, public_sig, record
from pbx_bridge.calls.tracking.state import (
    ENDED_MEMORY,
    Call,
    TrackerState,
    remember,
    valid_ts,
)


def emit(st: TrackerState, call: Call, kind: ChangeKind, ext: str | None) -> None:
    if not call.started_emitted:
        call.started_emitted = True
        rec = record(st, call)
        call.public_sig = public_sig(rec)
        st.changes.append(CallChange("started", rec))
        if kind == "started":
            st.emitted.add(id(call))
            return
    if kind == "started":
        return
    rec = record(st, call)
    call.public_sig = public_sig(rec)
    if kind == "answered" and ext is None:
        ext = rec.operator
    st.changes.append(CallChange(kind, rec, ext))
    st.emitted.add(id(call))


def after_event(st: TrackerState, call: Call) -> None:
    """`started` once the call says what it is; `updated` when the public record changed."""
    if call.linkedid not in st.calls:
        return
    origin = call.channels.get(call.origin_uid or "")
    raw = (call.direction_var, call.origin_uid, origin.inbound if origin else None,
           origin.cid_num if origin else None, origin.cid_name if origin else None,
           origin.inbound_exten if origin else None, call.dialled_raw, call.customer_uid,
           call.operator, len(call.operators_rung), call.queue, len(call.transfers),
           call.answered_at is not None, call.click_to_call_id, call.external_dest,
           call.operator_dest)
    if raw == call.raw_sig:
        return
    call.raw_sig = raw
    if not call.started_emitted:
        if direction(st, call) != "unknown":
            emit(st, call, "started", None)
        return
    if id(call) in st.emitted:
        return
    rec = record(st, call)
    sig = public_sig(rec)
    if sig != call.public_sig:
        call.public_sig = sig
        st.changes.append(CallChange("updated", rec))


def end(st: TrackerState, call: Call, ts: float, outage: bool = False) -> None:
    st.pending_ends.pop(call.linkedid, None)
    if call.linkedid not in st.calls:
        return
    if not valid_ts(ts) or ts < call.started_at:
        ts = max(call.last_ts, call.started_at)
    for state in call.legs.values():
        if state.leg.hungup_at is None:
            state.leg.hungup_at = ts
        state.live.clear()
    for uid in call.channels:
        st.channels.pop(uid, None)
        remember(st.gone, uid)
    call.live.clear()
    del st.calls[call.linkedid]
    remember(st.ended, call.linkedid)
    rec = record(st, call, ended_at=ts, outage=outage)
    if outage:
        st.outage_ended[call.linkedid] = rec
        if len(st.outage_ended) > ENDED_MEMORY:
            del st.outage_ended[next(iter(st.outage_ended))]
    if not call.started_emitted:
        emit(st, call, "started", None)
    st.changes.append(CallChange("ended", rec, rec.operator))
    st.emitted.add(id(call))


def drop(st: TrackerState, call: Call) -> None:
    """Forget a call without reporting anything (CEL's record replaces it)."""
    st.pending_ends.pop(call.linkedid, None)
    for uid in call.channels:
        st.channels.pop(uid, None)
        remember(st.gone, uid)
    st.calls.pop(call.linkedid, None)
    remember(st.ended, call.linkedid)
