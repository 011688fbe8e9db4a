"""Dials and queues: who a call rings and how each ring ends.

A Dial with a caller (`DialBegin`/`DialEnd` with a `Channel`) is the call ringing someone: the
first number the call's origin dials is what it dialled, an operator's phone rung is reported
`ringing`, and its ANSWER answers the call, unless it is an operator consulting a colleague
(pbx_bridge.calls.tracking.transfers.consultation). A Dial without a caller is an Originate
ringing its first party (pbx_bridge.calls.tracking.originates). Queues: the queue a call joined,
whether the caller abandoned it or left it unanswered, the agents it rang and the one connected.

Events: DialBegin, DialEnd, QueueCallerJoin, QueueCallerAbandon, QueueCallerLeave, AgentCalled,
AgentConnect.
"""

from __future__ import annotations

from pbx_bridge.ami.events import AmiEvent
from pbx_bridge.calls.tracking.answering import ring, ring_over
from pbx_bridge.calls.tracking.channels import merge, touch
from pbx_bridge.calls.tracking.rules import DIALLED
from pbx_bridge.calls.tracking.state import DEST, Call, P, TrackerState
from pbx_bridge.calls.tracking.transfers import answered_by, consultation


def on_dial_begin(st: TrackerState, ev: AmiEvent, ts: float) -> Call | None:
    caller = touch(st, ev, ts, P, True)
    dest = touch(st, ev, ts, DEST, True)
    if dest is None:
        return caller.call if caller is not None else None
    call = dest.call
    if caller is not None:
        if caller.call is not call:
            merge(st, dest.call, caller.call)
            call = caller.call
        if caller.uid == call.origin_uid and call.dialled_raw is None:
            exten = ev.headers.get("Exten", "")
            # FreePBX dials trunks from a macro whose Exten is `s`: only a number counts.
            if exten and len(exten) < 64 and DIALLED.fullmatch(exten):
                call.dialled_raw = exten
        call.dialled_by[dest.uid] = caller.uid
        if dest.ext is not None:
            call.operator_dest = True
        elif not dest.name.startswith("Local/") or caller.ext is not None:
            call.external_dest = True
            if call.customer_uid is None and caller.ext is not None:
                call.customer_uid = dest.uid
    else:
        call.originated.add(dest.uid)
    ring(st, call, dest)
    return call


def on_dial_end(st: TrackerState, ev: AmiEvent, ts: float) -> Call | None:
    caller = touch(st, ev, ts, P, False)
    dest = touch(st, ev, ts, DEST, False)
    if dest is None:
        return caller.call if caller is not None else None
    call = dest.call
    if caller is not None and caller.call is not call:
        # The dialled channel came from another call (a pickup's channel, originated on
        # its own, answering the trunk's Dial): it joins the caller's call.
        merge(st, call, caller.call)
        call = caller.call
    ring_over(call, dest)
    status = ev.headers.get("DialStatus", "")
    if caller is not None:
        if status == "ANSWER":
            if consultation(call, caller):
                # An operator consulting a colleague while the customer waits (Atxfer's
                # Local pair dialling 102): that leg answered, not the call; who talks with
                # the customer changes only when the transfer completes.
                if dest.leg.leg.answered_at is None:
                    dest.leg.leg.answered_at = ts
            else:
                answered_by(st, call, ts, dest)
        elif status:
            call.last_dial_status = status
    elif status:
        call.originate_status = status
    return call


def on_queue_join(st: TrackerState, ev: AmiEvent, ts: float) -> Call | None:
    ch = touch(st, ev, ts, P, True)
    if ch is None:
        return None
    queue = ev.headers.get("Queue")
    if queue and ch.call.queue is None and len(queue) <= 64:
        ch.call.queue = queue
    return ch.call


def on_queue_abandon(st: TrackerState, ev: AmiEvent, ts: float) -> Call | None:
    ch = touch(st, ev, ts, P, False)
    if ch is None:
        return None
    ch.call.queue_abandoned = True
    return ch.call


def on_queue_leave(st: TrackerState, ev: AmiEvent, ts: float) -> Call | None:
    ch = touch(st, ev, ts, P, False)
    if ch is None:
        return None
    ch.call.queue_left = True
    return ch.call


def on_agent_called(st: TrackerState, ev: AmiEvent, ts: float) -> Call | None:
    caller = touch(st, ev, ts, P, True)
    dest = touch(st, ev, ts, DEST, True)
    if caller is None or dest is None:
        return None
    call = caller.call
    queue = ev.headers.get("Queue")
    if queue and call.queue is None and len(queue) <= 64:
        call.queue = queue
    if dest.call is call:
        ring(st, call, dest)
    return call


def on_agent_connect(st: TrackerState, ev: AmiEvent, ts: float) -> Call | None:
    caller = touch(st, ev, ts, P, False)
    dest = touch(st, ev, ts, DEST, False)
    if caller is None or dest is None or dest.call is not caller.call:
        return caller.call if caller is not None else None
    answered_by(st, caller.call, ts, dest)
    return caller.call
