"""The real click_to_call trace as an AMI server script: after an Originate, the trace's events
are played with the request's ChannelId and CALL_ID in place of the recorded ones.

Outcome variants edit the real events minimally (one DialStatus, cut after it), since the
shared traces hold only the answered case.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.raw_ami import Script
from pbx_bridge.simulator.trace import read_trace

RECORDED_CHANNEL_ID = b"78163ba9-18d0-42bc-92ba-18653d8331fc"
RECORDED_CALL_ID = b"c2c-demo-1"


def trace_events(path: Path) -> list[bytes]:
    return [f.raw for f in read_trace(path) if f.kind == "event"]


def _cut_at_dial_end(events: list[bytes], which: int, status: bytes) -> list[bytes]:
    seen = 0
    for i, raw in enumerate(events):
        if raw.startswith(b"Event: DialEnd\r\n"):
            seen += 1
            if seen == which:
                out = [*events[:i], raw.replace(b"DialStatus: ANSWER", b"DialStatus: " + status)]
                # The OriginateResponse of an operator who did not answer is a failure too.
                if which == 1:
                    out = [e.replace(b"Response: Success", b"Response: Failure").replace(
                        b"Reason: 4", b"Reason: 3") for e in out]
                return out
    raise AssertionError("the trace has fewer DialEnd events than expected")


def variant(events: list[bytes], outcome: str) -> list[bytes]:
    if outcome == "answered":
        return events
    if outcome == "operator_no_answer":
        return _cut_at_dial_end(events, 1, b"NOANSWER")
    if outcome == "customer_busy":
        return _cut_at_dial_end(events, 2, b"BUSY")
    raise ValueError(outcome)


def script(path: Path, outcome: str = "answered", gap: float = 0.0) -> Script:
    events = variant(trace_events(path), outcome)

    def play(action: dict[str, Any]) -> list[tuple[float, bytes]]:
        channel_id = action["ChannelId"].encode()
        call_id = next(v for v in action["Variable"] if v.startswith("__CALL_ID=")).split("=", 1)[1]
        return [(gap, raw.replace(RECORDED_CHANNEL_ID, channel_id).replace(RECORDED_CALL_ID,
                                                                           call_id.encode()))
                for raw in events]

    return play
