"""Originates (click-to-call, a CRM's own AMI client, FreePBX's click-to-call module): the
`OriginateResponse` that says where the call was to go and whether its first party answered,
and the wait for it: a call whose Originate rang no one but its first party is ended only once
that response came (it names the number the call was meant to dial), or after
`ORIGINATE_RESPONSE_WAIT`.

The Dials an Originate places (Dials without a caller) are followed in
pbx_bridge.calls.tracking.dials; what a failed Originate makes of the call's status, in
pbx_bridge.calls.tracking.rules.
"""

from __future__ import annotations

from pbx_bridge.ami.events import AmiEvent
from pbx_bridge.calls.tracking.reporting import after_event, end
from pbx_bridge.calls.tracking.rules import DIALLED
from pbx_bridge.calls.tracking.state import Call, TrackerState

# Seconds (of event time) a call whose Originate rang no one but its first party waits, after
# its last channel hung up, for the OriginateResponse that names the number it was to dial.
ORIGINATE_RESPONSE_WAIT = 2.0
# OriginateResponse Reason (Asterisk's AST_CONTROL_*) of a failed Originate -> the call's status.
_ORIGINATE_FAILURE_STATUS: dict[str, str] = {"3": "NOANSWER", "5": "BUSY", "8": "CONGESTION"}


def awaits_originate_response(call: Call) -> bool:
    """The call is only an Originate ringing its first party, who never answered: its
    OriginateResponse, right behind this Hangup, says what number it was meant to dial."""
    return (call.ending_at is None and not call.originate_answered
            and call.answered_at is None and call.dialled_raw is None
            and call.origin_uid is not None and call.origin_uid in call.originated)


def await_originate_response(st: TrackerState, call: Call, ts: float) -> bool:
    """The call's last channel went at `ts`: True when its end waits for the OriginateResponse
    (the caller must not end it now)."""
    if not awaits_originate_response(call):
        return False
    call.ending_at = ts
    st.pending_ends[call.linkedid] = ts
    return True


def on_originate_response(st: TrackerState, ev: AmiEvent, ts: float) -> Call | None:
    """Sent to every AMI session for every Originate, whoever placed it (our click-to-call,
    a CRM's own AMI client, FreePBX's click-to-call module): where the call was to go
    (`Context`/`Exten`) and whether the first party answered."""
    h = ev.headers
    ch = st.channels.get(h.get("Uniqueid", ""))
    call = ch.call if ch is not None else _pending_for_channel(st, h.get("Channel", ""))
    if call is None:
        return None
    call.originate_answered = True
    if h.get("Response") == "Failure":
        call.originate_failed = True
        status = _ORIGINATE_FAILURE_STATUS.get(h.get("Reason", ""))
        if status is not None and call.originate_status in (None, "ANSWER"):
            call.originate_status = status
    exten = h.get("Exten", "")
    if call.dialled_raw is None and 0 < len(exten) < 64 and DIALLED.fullmatch(exten):
        call.dialled_raw = exten
    if call.ending_at is not None:
        st.pending_ends.pop(call.linkedid, None)
        after_event(st, call)
        end(st, call, call.ending_at)
        return None
    return call


def _pending_for_channel(st: TrackerState, dial: str) -> Call | None:
    """The call a failed OriginateResponse is about when it names no Uniqueid (no ChannelId
    was given): its `Channel` is the dial string (`PJSIP/101`, `Local/101@op-phone/n`), the
    first party's channel name that string plus `-<sequence>`."""
    if not dial or not st.pending_ends:
        return None
    stem = dial.rsplit("/", 1)[0] if dial.startswith("Local/") and dial.count("/") > 1 else dial
    for linkedid in st.pending_ends:
        call = st.calls.get(linkedid)
        origin = call.channels.get(call.origin_uid or "") if call is not None else None
        if origin is not None and origin.name.startswith(stem + "-"):
            return call
    return None


def flush_pending_ends(st: TrackerState, now: float | None) -> None:
    """End the calls whose OriginateResponse has not come within the wait (all of them when
    `now` is None)."""
    for linkedid, ending in list(st.pending_ends.items()):
        if now is not None and now < ending + ORIGINATE_RESPONSE_WAIT:
            continue
        del st.pending_ends[linkedid]
        call = st.calls.get(linkedid)
        if call is not None:
            end(st, call, ending)
