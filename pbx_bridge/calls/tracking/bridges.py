"""Bridges: which channels of a call share a bridge, and the answer they imply when the Dial
events were missed or the call was only seen in a snapshot (two legs of the call in one bridge).
A channel leaving a bridge under another call's Linkedid joined that call.

Transfers, which bridges carry out, are recorded from their own events: see
pbx_bridge.calls.tracking.transfers.

Events: BridgeEnter, BridgeLeave.
"""

from __future__ import annotations

from pbx_bridge.ami.events import AmiEvent
from pbx_bridge.calls.tracking.channels import follow_linkedid, touch
from pbx_bridge.calls.tracking.state import Call, P, TrackerState
from pbx_bridge.calls.tracking.transfers import answered_by


def on_bridge_enter(st: TrackerState, ev: AmiEvent, ts: float) -> Call | None:
    ch = touch(st, ev, ts, P, True)
    if ch is None:
        return None
    call = ch.call
    bridge = ev.headers.get("BridgeUniqueid", "")
    if not bridge:
        return call
    call.bridges[ch.uid] = bridge
    if call.answered_at is None:
        answer_from_bridge(st, call, bridge, ts)
    return call


def answer_from_bridge(st: TrackerState, call: Call, bridge: str, ts: float) -> None:
    """Two legs of the call in one bridge: it was answered (when the Dial events were
    missed, or the call was only seen in a snapshot)."""
    members = [call.channels[uid] for uid, b in call.bridges.items()
               if b == bridge and uid in call.channels and uid in call.live]
    if len({id(m.leg) for m in members}) < 2:
        return
    origin = call.channels.get(call.origin_uid or "")
    answerer = None
    for m in members:
        if m.ext is not None and m is not origin and (origin is None or m.ext != origin.ext):
            answerer = m
            break
    if answerer is None:
        answerer = next((m for m in members if m is not origin), members[0])
    answered_by(st, call, ts, answerer)


def on_bridge_leave(st: TrackerState, ev: AmiEvent, ts: float) -> Call | None:
    ch = st.channels.get(ev.headers.get("Uniqueid", ""))
    if ch is None:
        return None
    follow_linkedid(st, ch, ev.headers.get("Linkedid"))
    ch.call.bridges.pop(ch.uid, None)
    return None
