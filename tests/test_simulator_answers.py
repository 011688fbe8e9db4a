"""Every answer the simulator gives, held against what Asterisk 22.10.1 answered.

For each action the traces' client sent and Asterisk answered (the `Response:` blocks of the
real traces), the simulator is put in the same state (the trace replayed up to that action) and
sent the same action with the same ActionID over TCP: its answer must be the trace's, byte for
byte. CoreSettings is in no trace: its answer is checked against manager.c's action_coresettings
of the 22.10.1 source (format and field order) with the lab's asterisk.conf values.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pbx_bridge.simulator.server import AmiSimulator, SimulatorSettings
from pbx_bridge.simulator.trace import Frame, read_trace
from tests.conftest import TRACES as TRACE_DIR
from tests.test_simulator import RawClient

pytestmark = pytest.mark.timeout(120)

SECRET = "simulator"
TRACES = sorted(p.stem for p in TRACE_DIR.glob("*.ami"))


def answered_actions(frames: list[Frame]) -> list[tuple[int, Frame, bytes]]:
    """(position, action, Asterisk's answer) for each action the trace's Asterisk answered."""
    out = []
    for i, frame in enumerate(frames):
        if frame.kind != "action":
            continue
        aid = frame.get("ActionID")
        answer = next((f for f in frames[i + 1:] if f.kind == "response"
                       and f.get("ActionID") == aid), None)
        if answer is not None:
            out.append((i, frame, answer.raw))
    return out


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[AmiSimulator]:
    simulator = AmiSimulator(SimulatorSettings(auth_fail_delay=0.05, seed=5, secret=SECRET,
                                               spool_dir=tmp_path / "spool", system_name="pbx"))
    await simulator.start()
    yield simulator
    await simulator.stop()


async def _answer(client: RawClient, headers: list[tuple[str, str]]) -> bytes:
    """Send the action; Asterisk's answer is the first message starting `Response:`."""
    await client.action(**dict(headers))
    while True:
        message = await client.message()
        if message.startswith(b"Response:"):
            return message


@pytest.mark.parametrize("trace", TRACES)
async def test_each_answer_is_the_one_asterisk_gave(sim: AmiSimulator, traces: Path, trace: str) -> None:
    frames = read_trace(traces / f"{trace}.ami")
    checked = []
    client = await RawClient.connect(sim.port)
    try:
        replayed = 0
        for position, action, expected in answered_actions(frames):
            headers = [(k, SECRET if k == "Secret" else v) for k, v in action.headers]
            name = action.name
            if name == "Login":
                assert await client.login(SECRET) == expected
                checked.append(name)
                continue
            # The simulator in the state the trace's Asterisk was in when the action came.
            before = [f for f in frames[replayed:position] if f.kind == "event"]
            if before:
                await sim.replay([[*before]], speed=0)
            replayed = position
            answer = await _answer(client, headers)
            assert answer == expected, (trace, name, answer, expected)
            checked.append(name)
        assert "Login" in checked and "Logoff" in checked
    finally:
        client.close()


def test_every_kind_of_answered_action_is_covered(traces: Path) -> None:
    kinds = {action.name for t in TRACES
             for _i, action, _raw in answered_actions(read_trace(traces / f"{t}.ami"))}
    assert kinds == {"Login", "Originate", "MixMonitor", "CoreShowChannels", "Logoff", "Atxfer",
                     "Hangup"}


async def test_core_settings_answers_as_asterisk_22_10_1(sim: AmiSimulator) -> None:
    client = await RawClient.connect(sim.port)
    try:
        await client.login(SECRET)
        answer = await _answer(client, [("Action", "CoreSettings"), ("ActionID", "cs-1")])
    finally:
        client.close()
    # manager.c action_coresettings: these headers in this order; AMIversion is manager.h's
    # AMI_VERSION; the lab's asterisk.conf sets no runuser/rungroup/maxcalls/maxload/maxfiles,
    # cdr.conf enables CDR, there is no http.conf and no realtime.
    assert answer == (b"Response: Success\r\nActionID: cs-1\r\nAMIversion: 11.0.0\r\n"
                      b"AsteriskVersion: 22.10.1\r\nSystemName: pbx\r\nCoreMaxCalls: 0\r\n"
                      b"CoreMaxLoadAvg: 0.000000\r\nCoreRunUser: \r\nCoreRunGroup: \r\n"
                      b"CoreMaxFilehandles: 0\r\nCoreRealTimeEnabled: No\r\nCoreCDRenabled: Yes\r\n"
                      b"CoreHTTPenabled: No\r\nSoundsSearchCustomDir: No\r\n\r\n")


async def test_errors_are_asterisks_words(sim: AmiSimulator) -> None:
    """The error answers of manager.c for the actions the bridge and CRMs send."""
    client = await RawClient.connect(sim.port)
    cases = [
        ({"Action": "Atxfer", "Exten": "102"}, "No channel specified"),
        ({"Action": "Atxfer", "Channel": "PJSIP/101-00000001"}, "No extension specified"),
        ({"Action": "Atxfer", "Channel": "PJSIP/101-00000001", "Exten": "102"},
         "Channel specified does not exist"),
        ({"Action": "BlindTransfer", "Exten": "102"}, "No channel specified"),
        ({"Action": "BlindTransfer", "Channel": "PJSIP/101-00000001", "Exten": "102"},
         "Channel specified does not exist"),
        ({"Action": "Redirect", "Context": "transfer", "Exten": "102", "Priority": "1"},
         "Channel not specified"),
        ({"Action": "Redirect", "Channel": "PJSIP/trunk-1", "Exten": "102", "Priority": "1"},
         "Context not specified"),
        ({"Action": "Redirect", "Channel": "PJSIP/trunk-1", "Context": "transfer", "Priority": "1"},
         "Exten not specified"),
        ({"Action": "Redirect", "Channel": "PJSIP/trunk-1", "Context": "transfer", "Exten": "102"},
         "Priority not specified"),
        ({"Action": "Redirect", "Channel": "PJSIP/trunk-1", "Context": "transfer", "Exten": "102",
          "Priority": "1"}, "Channel does not exist: PJSIP/trunk-1"),
        ({"Action": "Hangup", "Channel": "PJSIP/101-00000001"}, "No such channel"),
        ({"Action": "MixMonitor", "Channel": "PJSIP/101-00000001", "File": "x.raw"},
         "No such channel"),
        ({"Action": "NoSuchAction"}, "Invalid/unknown command"),
    ]
    try:
        await client.login(SECRET)
        for i, (fields, message) in enumerate(cases):
            answer = await asyncio.wait_for(_answer(client, [*fields.items(), ("ActionID", f"e{i}")]), 5)
            assert answer == f"Response: Error\r\nActionID: e{i}\r\nMessage: {message}\r\n\r\n".encode(), \
                (fields, answer)
    finally:
        client.close()
