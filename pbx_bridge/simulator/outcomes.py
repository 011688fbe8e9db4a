"""Click-to-call outcomes other than "answered", derived from the real click_to_call trace.

The shared traces hold only the answered case. These variants keep the trace's own events up to
the point where the call went another way, then end it the way Asterisk does: the `DialEnd` of
the leg that failed with its `DialStatus`, for an operator who did not answer a failed
`OriginateResponse` (Reason 3: it was ringing when the originate timed out; 5: busy), then the `Hangup`
of every channel still up, in the trace's own words (its Hangup events, with another cause).
"""

from __future__ import annotations

import re
from typing import Literal

from pbx_bridge.simulator.templates import broadcast_events
from pbx_bridge.simulator.trace import Frame, parse_headers

OriginateOutcome = Literal["answer", "operator_no_answer", "operator_busy", "customer_no_answer",
                           "customer_busy"]
OUTCOMES: tuple[OriginateOutcome, ...] = ("answer", "operator_no_answer", "operator_busy",
                                          "customer_no_answer", "customer_busy")

# (DialStatus, hangup cause, cause text) per outcome.
_FAILURES = {
    "operator_no_answer": ("NOANSWER", "19", "No answer"),
    "operator_busy": ("BUSY", "17", "User busy"),
    "customer_no_answer": ("NOANSWER", "19", "No answer"),
    "customer_busy": ("BUSY", "17", "User busy"),
}
# OriginateResponse Reason (AST_CONTROL_*): 3 = still ringing when it timed out, 5 = busy.
_ORIGINATE_REASON = {"operator_no_answer": "3", "operator_busy": "5"}
RING_SECONDS = 3.0  # how long the failing leg rang (or how soon "busy" came back)


def _frame(raw: bytes) -> Frame:
    return Frame("event", parse_headers(raw), raw)


def _set(raw: bytes, key: str, value: str) -> bytes:
    return re.sub(rb"(?m)^" + re.escape(key.encode()) + rb": [^\r]*\r$",
                  key.encode() + b": " + value.encode().replace(b"\\", b"\\\\") + b"\r", raw, count=1)


def originate_variant(frames: list[Frame], outcome: OriginateOutcome) -> list[Frame]:
    """The trace's broadcast events for `outcome` (the same list for "answer")."""
    events = broadcast_events(frames)
    if outcome == "answer":
        return events
    status, cause, cause_txt = _FAILURES[outcome]
    operator_leg = outcome.startswith("operator")
    dial_ends = [f for f in events if f.name == "DialEnd"]
    if len(dial_ends) < 2:
        raise ValueError("not a click-to-call trace: expected two DialEnd events")
    dial_end = dial_ends[0 if operator_leg else 1]
    target = dial_end.get("DestChannel")
    # Everything before the failing leg answered (its Newstate Up) or, failing that, its DialEnd.
    stop = next((i for i, f in enumerate(events)
                 if f.name == "Newstate" and f.get("ChannelStateDesc") == "Up"
                 and f.get("Channel").split(";")[0] == target.split(";")[0]),
                events.index(dial_end))
    kept = [f for f in events[:stop] if f.name != "OriginateResponse"]
    last = max(f.timestamp or 0.0 for f in kept)
    at = last + RING_SECONDS

    def stamped(raw: bytes) -> Frame:
        nonlocal at
        at += 0.001
        return _frame(_set(raw, "Timestamp", f"{at:.6f}"))

    out = list(kept)
    out.append(stamped(_set(dial_end.raw, "DialStatus", status)))
    if operator_leg:
        response = next(f for f in events if f.name == "OriginateResponse")
        raw = _set(_set(response.raw, "Response", "Failure"), "Reason", _ORIGINATE_REASON[outcome])
        out.append(stamped(raw))
    # Channels still up at that point hang up, each with the trace's own Hangup event.
    alive: list[str] = []
    for f in kept:
        name = f.get("Channel")
        if f.name == "Newchannel" and name not in alive:
            alive.append(name)
        elif f.name == "Hangup" and name in alive:
            alive.remove(name)
    hangups = {f.get("Channel"): f for f in events if f.name == "Hangup"}
    for name in reversed(alive):
        hangup = hangups.get(name)
        if hangup is None:
            continue
        raw = _set(_set(hangup.raw, "Cause", cause), "Cause-txt", cause_txt)
        out.append(stamped(raw))
    return out
