"""Ringing and answering: which operators a call rang (`ringing` once per operator per ring) and
who answered it (`answered` once).

The call is answered by a Dial with a caller that ends ANSWER, an `AgentConnect`, a `Pickup`,
or, when those were missed, two legs meeting in a bridge (pbx_bridge.calls.tracking.bridges). A
Dial without a caller is an `Originate` ringing its first party (the operator's phone in
click-to-call, or the lab's stand-in customer): that answering is not the call's answer. An
answer by another operator once the call was answered is a hand-over, which `answer` returns
for pbx_bridge.calls.tracking.transfers to record.
"""

from __future__ import annotations

from pbx_bridge.calls.tracking.reporting import emit
from pbx_bridge.calls.tracking.state import Call, Channel, TrackerState


def ring(st: TrackerState, call: Call, dest: Channel) -> None:
    ext = dest.ext
    if ext is None or dest.uid in call.rung_uids or dest.uid not in call.live:
        return
    call.rung_uids.add(dest.uid)
    if ext not in call.operators_rung:
        call.operators_rung.append(ext)
    ringing = call.ring_active.setdefault(ext, set())
    ringing.add(dest.uid)
    if len(ringing) == 1:
        emit(st, call, "ringing", ext)


def ring_over(call: Call, ch: Channel) -> None:
    if ch.ext is not None:
        ringing = call.ring_active.get(ch.ext)
        if ringing:
            ringing.discard(ch.uid)


def answer(st: TrackerState, call: Call, ts: float,
           dest: Channel) -> tuple[str, str] | None:
    """`dest` answered. The call's first answer is reported `answered`; a later one by another
    operator than the one talking is returned as (previous, new) operator: the call changed
    hands without a transfer event."""
    if dest.uid in call.answered_uids and call.answered_at is not None:
        return None  # the same answer seen again (a replayed event): it must not undo a transfer
    call.answered_uids.add(dest.uid)
    ext = call.pickups.get(dest.uid) or dest.ext
    if ext is not None:
        origin = call.channels.get(call.origin_uid or "")
        # The operator placing an outbound call is not its answerer.
        if origin is not None and origin.ext == ext and origin.leg is not dest.leg:
            ext = None
    first = call.answered_at is None
    if first:
        call.answered_at = ts
    if dest.leg.leg.answered_at is None:
        dest.leg.leg.answered_at = ts
    previous = call.operator
    if ext is not None:
        call.operator = ext
    if first:
        emit(st, call, "answered", None)
    elif ext is not None and previous is not None and ext != previous:
        return previous, ext
    return None
