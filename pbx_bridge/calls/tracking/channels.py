"""Channels and Local pairs: the channel an event is about (created on first sight, under the call
its Linkedid names), the legs (the two halves `;1`/`;2` of a Local channel are one leg), the
channel variables the tracker reads (`DIRECTION`, `CALL_ID`), two calls becoming one when their
channels meet (`merge`), and channels hanging up.

Events: Newchannel, NewCallerid, Newstate, Newexten, VarSet, Hangup.
"""

from __future__ import annotations

from pbx_bridge.ami.events import AmiEvent
from pbx_bridge.calls.changes import CallChange
from pbx_bridge.calls.record import Leg
from pbx_bridge.calls.tracking.answering import ring_over
from pbx_bridge.calls.tracking.originates import await_originate_response
from pbx_bridge.calls.tracking.reporting import end
from pbx_bridge.calls.tracking.rules import VALID_DIRECTIONS, record
from pbx_bridge.calls.tracking.state import (
    ENDED_MEMORY,
    MAX_FIELD,
    NORMALIZE_CACHE,
    Call,
    Channel,
    LegState,
    P,
    Prefix,
    TrackerState,
    leg_key,
    remember,
    valid_ts,
)


def touch(st: TrackerState, ev: AmiEvent, ts: float, p: Prefix, create: bool) -> Channel | None:
    """The channel an event (or one of its prefixed snapshots) is about, created on first
    sight, with its context, extension and caller id brought up to date."""
    h = ev.headers
    uid = h.get(p.uniqueid)
    if not uid or len(uid) > MAX_FIELD:
        return None
    ch = st.channels.get(uid)
    if ch is None:
        if uid in st.gone:
            return None
        linkedid = h.get(p.linkedid)
        if not linkedid or len(linkedid) > MAX_FIELD:
            return None
        linkedid = st.alias.get(linkedid, linkedid)
        call = st.calls.get(linkedid)
        if call is None:
            if not create or linkedid in st.ended:
                return None
            call = Call(linkedid, ts)
            st.calls[linkedid] = call
        name = h.get(p.channel, "")
        if len(name) > MAX_FIELD:
            name = name[:MAX_FIELD]
        ch = add_channel(st, call, uid, name, ts)
    else:
        call = ch.call
        linkedid = h.get(p.linkedid)
        if linkedid and linkedid != call.linkedid:
            # Channels meeting in a bridge take the oldest Linkedid: one call, not two.
            target = st.calls.get(st.alias.get(linkedid, linkedid))
            if target is not None and target is not call:
                merge(st, call, target)
                call = target
    if ts and ts < call.started_at:
        call.started_at = ts
    if ts > call.last_ts:
        call.last_ts = ts
    settings = st.settings
    ctx = h.get(p.context)
    if ctx and ctx != ch.context:
        ch.context = ctx
        if ctx in settings.inbound_contexts:
            ch.inbound = True
    exten = h.get(p.exten)
    if exten:
        ch.exten = exten
        if (ch.inbound_exten is None and ctx in settings.inbound_contexts
                and len(exten) > settings.max_extension_length and len(exten) < 40):
            ch.inbound_exten = exten
    num = h.get(p.callerid_num)
    if num is not None and len(num) <= 64:
        ch.cid_num = num
    name_ = h.get(p.callerid_name)
    if name_ is not None and len(name_) <= MAX_FIELD:
        ch.cid_name = name_
    if p is P and ev.variables:
        apply_vars(call, ev.variables)
    return ch


def add_channel(st: TrackerState, call: Call, uid: str, name: str, ts: float) -> Channel:
    base = leg_key(name, uid)
    state = call.legs.get(base)
    ext = operator_ext(st, name)
    if state is None:
        state = LegState(Leg(uniqueid=uid, channel=name, role="other", extension=ext,
                             created_at=ts))
        call.legs[base] = state
    elif name.endswith(";1"):
        # The ;1 half names the leg: it is what Dial rang and what MixMonitor records.
        state.leg.uniqueid = uid
        state.leg.channel = name
    if ts and ts < state.leg.created_at:
        state.leg.created_at = ts
    ch = Channel(call, uid, name, ext, state)
    call.channels[uid] = ch
    call.live.add(uid)
    state.live.add(uid)
    st.channels[uid] = ch
    if call.origin_uid is None or uid == call.linkedid:
        call.origin_uid = uid
    return ch


def operator_ext(st: TrackerState, name: str) -> str | None:
    """The operator's extension a channel name stands for (the `operator_channel` pattern)."""
    try:
        return st.op_cache[name]
    except KeyError:
        pass
    m = st.settings.operator_channel.match(name)
    ext = None
    if m is not None:
        try:
            ext = m.group("ext") or None
        except IndexError:
            ext = None
    if len(st.op_cache) > NORMALIZE_CACHE:
        st.op_cache.clear()
    st.op_cache[name] = ext
    return ext


def apply_vars(call: Call, variables: dict[str, str]) -> None:
    direction = variables.get("DIRECTION")
    if direction and call.direction_var is None:
        direction = direction.strip().lower()
        if direction in VALID_DIRECTIONS:
            call.direction_var = direction
    call_id = variables.get("CALL_ID")
    if call_id and call.click_to_call_id is None and len(call_id) <= 64:
        call.click_to_call_id = call_id


def merge(st: TrackerState, src: Call, dst: Call) -> None:
    """src's channels joined dst (a transfer or pickup bridged them): src is no call of its
    own any more. Its record is reported once more with `merged_into` so the store drops
    it; its operators join dst's, in order."""
    for uid, ch in src.channels.items():
        ch.call = dst
        dst.channels[uid] = ch
    dst.live |= src.live
    for key, state in src.legs.items():
        dst.legs.setdefault(key, state)
    dst.bridges.update(src.bridges)
    for ext in src.operators_rung:
        if ext not in dst.operators_rung:
            dst.operators_rung.append(ext)
    for ext, uids in src.ring_active.items():
        dst.ring_active.setdefault(ext, set()).update(uids)
    dst.rung_uids |= src.rung_uids
    dst.pickups.update(src.pickups)
    dst.started_at = min(dst.started_at, src.started_at)
    dst.last_ts = max(dst.last_ts, src.last_ts)
    st.calls.pop(src.linkedid, None)
    alias = st.alias
    for k, v in list(alias.items()):
        if v == src.linkedid:
            alias[k] = dst.linkedid
    alias[src.linkedid] = dst.linkedid
    if len(alias) > ENDED_MEMORY:
        del alias[next(iter(alias))]
    remember(st.ended, src.linkedid)
    if src.started_emitted:
        rec = record(st, src)
        rec.merged_into = dst.linkedid
        st.changes.append(CallChange("updated", rec))


def follow_linkedid(st: TrackerState, ch: Channel, linkedid: str | None) -> None:
    """A channel now carrying another call's Linkedid joined that call (seen on events that
    otherwise only look the channel up)."""
    if not linkedid or linkedid == ch.call.linkedid:
        return
    target = st.calls.get(st.alias.get(linkedid, linkedid))
    if target is not None and target is not ch.call:
        merge(st, ch.call, target)


def channel_gone(st: TrackerState, call: Call, ch: Channel, ts: float,
                 cause: str | None) -> None:
    call.live.discard(ch.uid)
    call.bridges.pop(ch.uid, None)
    ring_over(call, ch)
    remember(st.gone, ch.uid)
    leg = ch.leg
    leg.live.discard(ch.uid)
    if cause and leg.leg.hangup_cause is None and len(cause) <= 64:
        leg.leg.hangup_cause = cause
    if not leg.live and leg.leg.hungup_at is None:
        leg.leg.hungup_at = ts


# --- event handlers (each returns the call it touched) ----------------------------------


def on_channel_event(st: TrackerState, ev: AmiEvent, ts: float) -> Call | None:
    ch = touch(st, ev, ts, P, True)
    return ch.call if ch is not None else None


def on_newstate(st: TrackerState, ev: AmiEvent, ts: float) -> Call | None:
    ch = touch(st, ev, ts, P, True)
    if ch is None:
        return None
    if ev.headers.get("ChannelState") == "6" and not ch.up:
        ch.up = True
        if ch.leg.leg.answered_at is None:
            ch.leg.leg.answered_at = ts
    return ch.call


def on_newexten(st: TrackerState, ev: AmiEvent, ts: float) -> Call | None:
    # The most frequent event: only a context change (a call reaching an inbound context)
    # matters, and only for channels we know.
    h = ev.headers
    ch = st.channels.get(h.get("Uniqueid", ""))
    if ch is None or h.get("Context") == ch.context:
        return None
    ch = touch(st, ev, ts, P, False)
    return ch.call if ch is not None else None


def on_varset(st: TrackerState, ev: AmiEvent, ts: float) -> Call | None:
    h = ev.headers
    var = h.get("Variable", "").lstrip("_")
    if var not in ("DIRECTION", "CALL_ID"):
        return None
    ch = st.channels.get(h.get("Uniqueid", ""))
    if ch is None:
        return None
    apply_vars(ch.call, {var: h.get("Value", "")})
    return ch.call


def on_hangup(st: TrackerState, ev: AmiEvent, ts: float) -> Call | None:
    h = ev.headers
    uid = h.get("Uniqueid")
    if not uid or len(uid) > MAX_FIELD:
        return None
    ch = st.channels.get(uid)
    if ch is None:
        # Before its Newchannel, or of a call we never saw: remember it so a late
        # Newchannel does not open a channel that never hangs up.
        remember(st.gone, uid)
        return None
    follow_linkedid(st, ch, h.get("Linkedid"))
    call = ch.call
    if valid_ts(ts) and ts > call.last_ts:
        call.last_ts = ts
    channel_gone(st, call, ch, ts, h.get("Cause-txt") or h.get("Cause"))
    if not call.live:
        if not await_originate_response(st, call, ts):
            end(st, call, ts)
        return None
    return call
