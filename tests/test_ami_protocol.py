"""The AMI reader's parsing, on every frame of the real traces, and its byte-level framing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pbx_bridge.ami.events import AmiEvent
from pbx_bridge.ami.protocol import BridgeAmiProtocol, parse_event, parse_headers, to_event
from pbx_bridge.simulator.trace import read_trace


class Sink:
    pbx_name = "t"

    def __init__(self) -> None:
        self.events: list[AmiEvent] = []

    def clock(self) -> float:
        return 1.0

    def deliver_event(self, event: AmiEvent, text: str) -> None:
        self.events.append(event)

    def end_of_chunk(self) -> None:
        pass

    def protocol_lost(self, protocol: Any, exc: BaseException | None) -> None:
        pass


def test_fast_parser_matches_the_reference_on_every_trace_frame(traces: Path) -> None:
    count = 0
    for path in sorted(traces.glob("*.ami")):
        for frame in read_trace(path):
            if frame.kind != "event":
                continue
            text = frame.raw.decode("utf-8").rstrip("\r\n")
            fast = parse_event("t", text, 1.0)
            assert fast == to_event("t", parse_headers(text), 1.0)
            assert fast.name == frame.name
            # nothing lost: every header of the trace is there (last value wins) or a variable
            for key, value in frame.headers:
                if key == "Event":
                    continue
                if key == "ChanVariable" or key.startswith("ChanVariable("):
                    name, _, val = value.partition("=")
                    assert fast.variables[name] == val
                elif key.endswith("ChanVariable"):
                    name, _, val = value.partition("=")
                    assert fast.headers[f"{key}.{name}"] == val
            count += 1
    assert count > 1200


def test_empty_last_value_and_dest_variables_are_kept() -> None:
    # panoramisk strips the message, so `Extra: ` at the end of a CEL event would vanish.
    event = parse_event("t", "Event: CEL\r\nEventName: HANGUP\r\nExtra: ", 0.0)
    assert event.headers == {"EventName": "HANGUP", "Extra": ""}
    dial = parse_event("t", "Event: DialBegin\r\nChanVariable: CALL_ID=a\r\n"
                            "DestChanVariable: CALL_ID=b\r\nDestChanVariable: DIRECTION=in", 0.0)
    assert dial.variables == {"CALL_ID": "a"}
    assert dial.headers == {"DestChanVariable.CALL_ID": "b", "DestChanVariable.DIRECTION": "in"}


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64])
def test_reader_reassembles_any_split_of_the_stream(traces: Path, chunk: int) -> None:
    data = (traces / "inbound_answered.ami").read_bytes()
    data = b"".join(line for line in data.splitlines(keepends=True) if not line.startswith(b">>> "))
    data = data.replace(b"Ivan Petrov", "Иван Петров".encode())
    sink = Sink()
    protocol = BridgeAmiProtocol(sink)
    protocol.responses = {}
    protocol.version = None
    for i in range(0, len(data), chunk):
        protocol.data_received(data[i:i + chunk])
    assert protocol.version == "11.0.0"
    expected = [f for f in read_trace(traces / "inbound_answered.ami")
                if f.kind == "event" and (not f.get("ActionID") or f.name == "OriginateResponse")]
    assert [e.name for e in sink.events] == [f.name for f in expected]
    names = {e.headers.get("CallerIDName") for e in sink.events}
    assert "Иван Петров" in names and "Ivan Petrov" not in names


async def test_cancel_and_wait_stops_a_task_that_swallowed_a_cancel() -> None:
    import asyncio

    from pbx_bridge.ami.tasks import cancel_and_wait

    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                swallowed += 1
                if swallowed > 1:
                    raise  # as wait_for on 3.11 can lose one cancellation, this loses the first

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    assert await cancel_and_wait(task, limit=2.0)
    assert task.cancelled() and swallowed == 2
