"""Hostile bytes on the AMI wire: the bridge's real reader (BridgeAmiProtocol, the parser inside
PbxConnection) fed random bytes and mutated real frames of another call, interleaved with a real
call's frames and cut into random TCP-sized chunks. Nothing may crash, and the real call must still
give exactly the record shared/ami-traces/README.md expects.

Junk is always followed by a message terminator (a blank line): AMI frames messages by blank lines,
so junk glued to the next real message without one is part of that message by definition."""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pbx_bridge.ami.connection import PbxConnection
from pbx_bridge.ami.events import AmiEvent, ChannelsSnapshot
from pbx_bridge.ami.protocol import MAX_PENDING_BYTES, BridgeAmiProtocol
from pbx_bridge.calls.queue import QueueItem
from pbx_bridge.calls.record import CallRecord
from pbx_bridge.calls.tracker import CallTracker
from pbx_bridge.config import PbxConfig
from pbx_bridge.simulator.server import AmiSimulator, SimulatorSettings
from pbx_bridge.simulator.trace import read_trace
from tests.conftest import TRACES
from tests.tracker_support import EXPECTED, check_record, settings_for

pytestmark = pytest.mark.timeout(60)

REAL = "queue_ringall_answered"  # the richest inbound trace: queue, two operators, a cancel twice
DECOY = "inbound_noanswer"
BANNER = b"Asterisk Call Manager/11.0.0\r\n"
TERMINATOR = b"\r\n\r\n"


def live_event_frames(name: str) -> list[bytes]:
    """The raw bytes of the trace's live events (not action answers), each with its terminator."""
    frames = read_trace(Path(TRACES) / f"{name}.ami")
    return [f.raw.rstrip(b"\r\n") + TERMINATOR for f in frames
            if f.kind == "event" and not f.get("ActionID")]


_ID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def as_other_call(frame: bytes) -> bytes:
    """The decoy call's frame with ids and channel names no single mutation can turn into the
    real call's: every Uniqueid/Linkedid (UUIDs on this PBX) gets a prefix, channel counters
    start with ffff."""
    return _ID.sub(lambda m: b"decoy-" + m.group(0), frame).replace(b"-0000", b"-ffff")


REAL_FRAMES = live_event_frames(REAL)
DECOY_FRAMES = [as_other_call(f) for f in live_event_frames(DECOY)]


class Sink:
    """What PbxConnection is to its protocol: collects the events in arrival order."""

    pbx_name = "lab"

    def __init__(self) -> None:
        self.events: list[AmiEvent] = []

    def clock(self) -> float:
        return 0.0

    def deliver_event(self, event: AmiEvent, text: str) -> None:
        self.events.append(event)

    def end_of_chunk(self) -> None:
        pass

    def protocol_lost(self, protocol: BridgeAmiProtocol, exc: BaseException | None) -> None:
        raise AssertionError("the reader closed the connection")


class NullTransport:
    def write(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        raise AssertionError("the reader closed the transport")


class ErrorLog(logging.Handler):
    """Reader errors are logged and swallowed (by design): the test fails on any of them."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def read(stream: bytes, cuts: list[int]) -> tuple[list[AmiEvent], BridgeAmiProtocol]:
    sink = Sink()
    protocol = BridgeAmiProtocol(sink)
    protocol.connection_made(NullTransport())  # type: ignore[arg-type]
    errors = ErrorLog()
    reader_log = logging.getLogger("pbx_bridge.ami.protocol")
    reader_log.addHandler(errors)
    try:
        start = 0
        for cut in [*sorted({c % (len(stream) + 1) for c in cuts}), len(stream)]:
            if cut > start:
                protocol.data_received(stream[start:cut])
                start = cut
    finally:
        reader_log.removeHandler(errors)
    assert not errors.records, [r.getMessage() for r in errors.records]
    return sink.events, protocol


def records_of(events: list[AmiEvent]) -> dict[str, CallRecord]:
    tracker = CallTracker(settings_for(REAL))
    ended: dict[str, CallRecord] = {}
    for event in events:
        for change in tracker.feed(event):
            if change.kind == "ended":
                assert change.record.linkedid not in ended, "a call ended twice"
                ended[change.record.linkedid] = change.record
    return ended


def real_record(events: list[AmiEvent]) -> CallRecord:
    real_ids = {e.headers.get("Linkedid") for e in read(BANNER + b"".join(REAL_FRAMES), [])[0]}
    records = [r for lid, r in records_of(events).items() if lid in real_ids]
    assert len(records) == 1, records
    return records[0]


def interleave(junk: list[bytes], positions: list[int]) -> bytes:
    """The real frames in order with each piece of junk (plus a terminator) at its position."""
    slots: dict[int, list[bytes]] = {}
    for piece, pos in zip(junk, positions, strict=False):
        slots.setdefault(pos % (len(REAL_FRAMES) + 1), []).append(piece + TERMINATOR)
    out = [BANNER]
    for i, frame in enumerate(REAL_FRAMES):
        out += slots.get(i, [])
        out.append(frame)
    out += slots.get(len(REAL_FRAMES), [])
    return b"".join(out)


def mutate(frame: bytes, edits: list[tuple[int, int, int]]) -> bytes:
    """Byte flips, deletions and insertions at random places of one frame's body."""
    body = bytearray(frame[: -len(TERMINATOR)])
    for op, pos, value in edits:
        if not body:
            break
        at = pos % len(body)
        if op == 0:
            body[at] = value
        elif op == 1:
            del body[at]
        else:
            body.insert(at, value)
    return bytes(body)


def test_the_decoy_is_a_real_second_call_and_harmless_unmutated() -> None:
    """Sanity for the fuzz tests below: untouched decoy frames make their own record."""
    spread = [i * len(REAL_FRAMES) // len(DECOY_FRAMES) for i in range(len(DECOY_FRAMES))]
    stream = interleave(DECOY_FRAMES, spread)
    events, _ = read(stream, [])
    records = records_of(events)
    assert len(records) == 2
    assert any(lid.startswith("decoy-") for lid in records)
    check_record(real_record(events), EXPECTED[REAL])


settings_fuzz = settings(max_examples=100, deadline=None,
                         suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@settings_fuzz
@given(junk=st.lists(st.binary(max_size=600), max_size=12),
       positions=st.lists(st.integers(min_value=0), min_size=12, max_size=12),
       cuts=st.lists(st.integers(min_value=0), max_size=40))
def test_random_bytes_between_frames_harm_no_call(junk: list[bytes], positions: list[int],
                                                  cuts: list[int]) -> None:
    events, _ = read(interleave(junk, positions), cuts)
    check_record(real_record(events), EXPECTED[REAL])


edit = st.tuples(st.integers(0, 2), st.integers(min_value=0), st.integers(0, 255))


@settings_fuzz
@given(picks=st.lists(st.tuples(st.integers(min_value=0), st.lists(edit, min_size=1, max_size=6)),
                      min_size=1, max_size=len(DECOY_FRAMES) * 2),
       positions=st.lists(st.integers(min_value=0), min_size=1, max_size=40),
       cuts=st.lists(st.integers(min_value=0), max_size=40))
def test_mutated_frames_of_another_call_harm_no_call(
        picks: list[tuple[int, list[tuple[int, int, int]]]], positions: list[int],
        cuts: list[int]) -> None:
    junk = [mutate(DECOY_FRAMES[i % len(DECOY_FRAMES)], edits) for i, edits in picks]
    events, _ = read(interleave(junk, positions * (len(junk) // len(positions) + 1)), cuts)
    check_record(real_record(events), EXPECTED[REAL])


@settings(max_examples=8, deadline=None)
@given(st.sampled_from([b"X", b"\x00", b"\xff\xfe", b"Event: ", b"\r"]),
       st.integers(min_value=MAX_PENDING_BYTES - 10, max_value=2 * MAX_PENDING_BYTES),
       st.lists(st.integers(min_value=0), max_size=20))
def test_oversized_lines_are_dropped_and_reading_goes_on(unit: bytes, size: int,
                                                         cuts: list[int]) -> None:
    giant = (unit * (size // len(unit) + 1))[:size]
    stream = interleave([giant, giant + b"\r\nEvent: Hangup"], [3, 9])
    # Whether a giant is dropped as junk or parsed as one (junk) message depends on where the
    # TCP reads cut it; either way the real call is untouched.
    events, _ = read(stream, cuts)
    check_record(real_record(events), EXPECTED[REAL])


# -- the same over real TCP, through PbxConnection and its one queue ------------------------------


async def test_fuzzed_stream_over_tcp_through_pbx_connection() -> None:
    """Random junk and mutated frames sent by a real TCP peer while the connection is logged in:
    the connection stays up (one login), answers a Ping, and the real call's record is right."""
    import random

    rng = random.Random(20261126)
    junk: list[bytes] = []
    for i in range(60):
        if i % 2:
            junk.append(rng.randbytes(rng.randrange(1, 3000)))
        else:
            frame = DECOY_FRAMES[i % len(DECOY_FRAMES)]
            edits = [(rng.randrange(3), rng.randrange(10**6), rng.randrange(256)) for _ in range(4)]
            junk.append(mutate(frame, edits))
    stream = interleave(junk, [rng.randrange(len(REAL_FRAMES) + 1) for _ in junk])
    stream = stream.removeprefix(BANNER)  # the simulator sent its own banner at connect

    sim = AmiSimulator(SimulatorSettings(seed=3))
    await sim.start()
    queue: asyncio.Queue[QueueItem] = asyncio.Queue()
    config: dict[str, Any] = dict(name="lab", host="127.0.0.1", port=sim.port, username="bridge",
                                  secret="simulator", ping_interval=5.0, ping_timeout=2.0,
                                  reconnect_min=0.05, reconnect_max=0.4)
    conn = PbxConnection(PbxConfig(**config), queue)
    await conn.start()
    try:
        while not isinstance(await asyncio.wait_for(queue.get(), 5), ChannelsSnapshot):
            pass
        for start in range(0, len(stream), 1400):  # MTU-sized writes, cut anywhere
            sim.send_raw(stream[start:start + 1400])
            await asyncio.sleep(0)
        pong = await conn.send_action({"Action": "Ping"})
        assert pong.get("Ping") == "Pong"
        assert conn.logins == 1 and conn.state == "connected"
        events = []
        while not queue.empty():
            item = queue.get_nowait()
            if isinstance(item, AmiEvent):
                events.append(item)
        check_record(real_record(events), EXPECTED[REAL])
    finally:
        await conn.stop()
        await sim.stop()


def test_a_giant_arriving_in_pieces_is_dropped_as_junk() -> None:
    """Past MAX_PENDING_BYTES without a message end, the reader stops buffering (bounded memory),
    drops the junk and resynchronises at the next line end."""
    giant = b"X" * (MAX_PENDING_BYTES + 100_000)
    stream = interleave([giant], [5])
    events, protocol = read(stream, list(range(0, len(stream), 64 * 1024)))
    assert protocol.garbage_bytes > MAX_PENDING_BYTES
    check_record(real_record(events), EXPECTED[REAL])
