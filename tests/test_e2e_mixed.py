"""The issue's other two end-to-end points over the real TCP path: concurrent calls interleaved
in random orders give the same records as each call alone, and garbage on the wire between
them (malformed headers, binary junk, a 1 MB line, invalid UTF-8, events for unknown channels,
a Hangup before its Newchannel) harms no call and does not stop the bridge."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from pbx_bridge.simulator.templates import broadcast_events
from pbx_bridge.simulator.trace import Frame, read_trace
from tests.e2e_support import all_calls, ami_path, wait_until
from tests.tracker_support import EXPECTED, check_record

# Lab traces whose events are all about their own call (resync_mid_call needs its snapshot; the
# SIP traces need the SIP operator pattern).
MIXABLE = sorted(n for n in EXPECTED if n != "resync_mid_call" and not n.startswith("sip_"))

GARBAGE = [
    b"this is not a header\r\nnor: \r\n\r\n",
    bytes(range(256)) * 4 + b"\r\n\r\n",
    b"X" * 1_000_000 + b"\r\n\r\n",
    b"Event: UserEvent\r\nUserEvent: \xff\xfe caf\xc3\r\n\r\n",
    # Events for channels nobody knows, and a Hangup before its Newchannel.
    b"Event: Newstate\r\nChannel: PJSIP/999-000000ff\r\nChannelState: 6\r\nChannelStateDesc: Up\r\n"
    b"Uniqueid: ghost.1\r\nLinkedid: ghost.1\r\n\r\n",
    b"Event: Hangup\r\nChannel: PJSIP/trunk-000000fe\r\nUniqueid: early.1\r\nLinkedid: early.1\r\n"
    b"Cause: 16\r\nChanVariable: CALL_ID=\r\nChanVariable: DIRECTION=\r\n\r\n",
]


def _renamed(frame: Frame, prefix: str) -> Frame:
    headers = [(k, prefix + v if v and k.lower().endswith(("uniqueid", "linkedid")) else v)
               for k, v in frame.headers]
    raw = "".join(f"{k}: {v}\r\n" for k, v in headers).encode() + b"\r\n"
    return Frame("event", headers, raw)


def _linkedid(frames: list[Frame]) -> str:
    return next(f.get("Linkedid") for f in frames if f.get("Linkedid"))


def _interleave(streams: list[list[Frame]], rng: random.Random) -> list[Frame]:
    positions = [0] * len(streams)
    out: list[Frame] = []
    while any(p < len(s) for p, s in zip(positions, streams, strict=True)):
        i = rng.choice([i for i, s in enumerate(streams) if positions[i] < len(s)])
        out.append(streams[i][positions[i]])
        positions[i] += 1
    return out


@pytest.mark.parametrize("seed", [1, 2])
async def test_interleaved_calls_with_garbage_between_them(engine: AsyncEngine, traces: Path,
                                                           tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    names = rng.sample(MIXABLE, 4)
    streams = [[_renamed(f, f"s{seed}c{i}-") for f in broadcast_events(read_trace(traces / f"{n}.ami"))]
               for i, n in enumerate(names)]
    expected = {_linkedid(s): n for s, n in zip(streams, names, strict=True)}
    mixed = _interleave(streams, rng)
    cuts = sorted(rng.sample(range(1, len(mixed)), len(GARBAGE)))
    async with ami_path(engine, "lab", tmp_path) as path:
        start = 0
        for cut, junk in zip(cuts, GARBAGE, strict=True):
            await path.replay(mixed[start:cut])
            path.sim.send_raw(junk)
            start = cut
        await path.replay(mixed[start:])

        async def all_ended() -> bool:
            calls = await all_calls(engine)
            return len(calls) >= len(names) and all(c.ended_at is not None for c in calls)

        await wait_until(all_ended, 15, "every call final")
        await path.settled()
        records = {r.linkedid: r for r in await all_calls(engine)}
        assert set(records) == set(expected), sorted(records)
        for linkedid, name in expected.items():
            check_record(records[linkedid], EXPECTED[name])
            assert not records[linkedid].ended_during_outage
        assert path.connection.logins == 1 and path.connection.connected
        assert path.consumer.item_errors == 0
