"""Atxfer, BlindTransfer and Redirect on a live call of the simulator, over TCP.

The call is the SIP attended-transfer trace's, played with the trace's own customer and
operators; it waits where the trace's client acted. `Atxfer` then `Hangup` must give exactly the
trace's events (ids and times aside). A blind transfer and a Redirect have no trace: their
events are made of the same trace's events as Asterisk orders them (transfers.py); here they
are checked against Asterisk's event formats and against that trace, event by event.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pbx_bridge.simulator.calls import CallValues, LiveCall
from pbx_bridge.simulator.server import AmiSimulator, SimulatorSettings
from pbx_bridge.simulator.templates import broadcast_events, driving_actions
from pbx_bridge.simulator.trace import Frame, parse_headers, read_trace
from tests.test_simulator import RawClient

pytestmark = pytest.mark.timeout(120)

TRACE = "sip_attended_transfer"
_IDS = re.compile(r"\b(?:pbx|lab)-\d{9,11}\.\d+\b|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-"
                  r"[0-9a-f]{12}|(?<=-)[0-9a-f]{8}\b")
_TIMES = re.compile(r"^(Timestamp|EventTime|StartTime|AnswerTime|EndTime|SystemName): .*$", re.M)


def normalized(raws: list[bytes]) -> list[str]:
    """The events with times gone and every id replaced by its order of first appearance."""
    names: dict[str, str] = {}

    def token(match: re.Match[str]) -> str:
        return names.setdefault(match.group(0), f"<{len(names)}>")

    return [_IDS.sub(token, _TIMES.sub(r"\1: -", raw.decode())) for raw in raws]


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[AmiSimulator]:
    simulator = AmiSimulator(SimulatorSettings(auth_fail_delay=0.05, seed=11, speed=8.0,
                                               spool_dir=tmp_path / "spool", system_name="pbx"))
    await simulator.start()
    yield simulator
    await simulator.stop()


class Listener:
    """A logged-in raw AMI client collecting every event and answer."""

    def __init__(self, client: RawClient) -> None:
        self.client = client
        self.events: list[bytes] = []
        self.answers: list[bytes] = []
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while True:
            message = await self.client.reader.readuntil(b"\r\n\r\n")
            (self.answers if message.startswith(b"Response:") else self.events).append(message)

    async def answer(self, **fields: str) -> bytes:
        count = len(self.answers)
        await self.client.action(**fields)
        for _ in range(500):
            if len(self.answers) > count:
                return self.answers[count]
            await asyncio.sleep(0.01)
        raise AssertionError(f"no answer to {fields}")

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self.client.close()


@pytest.fixture
async def listener(sim: AmiSimulator) -> AsyncIterator[Listener]:
    client = await RawClient.connect(sim.port)
    await client.login()
    await client.message()  # FullyBooted
    out = Listener(client)
    yield out
    await out.close()


async def paused(call: LiveCall, index: int) -> None:
    for _ in range(1000):
        if call.pause is not None and call.index == index:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the call did not wait at event {index} (it is at {call.index})")


async def finished(call: LiveCall) -> None:
    for _ in range(2000):
        if call.done:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the call did not finish")


def the_trace(traces: Path) -> tuple[list[Frame], list[tuple[int, list[tuple[str, str]]]]]:
    frames = read_trace(traces / f"{TRACE}.ami")
    return broadcast_events(frames), driving_actions(frames)


def trace_call(sim: AmiSimulator, name: str = TRACE) -> LiveCall:
    """The trace's own call (its customer and operators), waiting for its client's actions."""
    return sim.add_call(sim.template(name), CallValues(customer="+74951239999", customer_name="Anna",
                                                       operators=["101", "102"]), interactive=True)


def channel_of(call: LiveCall, prefix: str) -> str:
    return next(ch.fields["Channel"] for ch in call.channels() if ch.fields["Channel"].startswith(prefix))


async def test_atxfer_then_hangup_give_exactly_the_traces_events(sim: AmiSimulator, listener: Listener,
                                                                  traces: Path) -> None:
    events, actions = the_trace(traces)
    call = trace_call(sim)
    (first, atxfer), (second, hangup) = actions
    await paused(call, first)
    operator = channel_of(call, "PJSIP/101-")
    fields = {k: (operator if k == "Channel" else v) for k, v in atxfer}
    answer = await listener.answer(**fields, ActionID="t1")
    assert answer == b"Response: Success\r\nActionID: t1\r\nMessage: Atxfer successfully queued\r\n\r\n"
    await paused(call, second)
    assert dict(hangup) == {"Action": "Hangup", "Channel": dict(atxfer)["Channel"]}
    answer = await listener.answer(Action="Hangup", Channel=operator, ActionID="t2")
    assert answer == b"Response: Success\r\nActionID: t2\r\nMessage: Channel Hungup\r\n\r\n"
    await finished(call)
    await asyncio.sleep(0.2)
    got = normalized(listener.events)
    want = normalized([f.raw for f in events])
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert g == w, (i, g, w)
    # The trace's timing after each action: the gaps between events are the trace's.
    stamps = [float(parse_headers(e)[2][1]) for e in listener.events]
    trace_stamps = [f.timestamp or 0.0 for f in events]
    for i in range(second + 1, len(events)):
        assert stamps[i] - stamps[second] == pytest.approx(trace_stamps[i] - trace_stamps[second], abs=1e-5)


def _fields(raw: bytes) -> list[tuple[str, str]]:
    return parse_headers(raw)


async def _transfer(sim: AmiSimulator, listener: Listener, traces: Path, action: dict[str, str],
                    answer: bytes) -> tuple[list[bytes], int, LiveCall]:
    _events, actions = the_trace(traces)
    call = trace_call(sim)
    first = actions[0][0]
    await paused(call, first)
    customer, operator = channel_of(call, "PJSIP/trunk-"), channel_of(call, "PJSIP/101-")
    names = {"<customer>": customer, "<operator>": operator}
    got = await listener.answer(**{k: names.get(v, v) for k, v in action.items()}, ActionID="x1")
    assert got == answer.replace(b"{aid}", b"x1")
    await finished(call)
    await asyncio.sleep(0.2)
    return listener.events, first, call


def _event(raw: bytes) -> dict[str, str]:
    return dict(_fields(raw))


async def test_blind_transfer(sim: AmiSimulator, listener: Listener, traces: Path) -> None:
    sent, first, _call = await _transfer(
        sim, listener, traces,
        {"Action": "BlindTransfer", "Channel": "<operator>", "Context": "transfer", "Exten": "102"},
        b"Response: Success\r\nActionID: {aid}\r\nMessage: Transfer succeeded\r\n\r\n")
    events, _actions = the_trace(traces)
    # Up to the action: the trace's call.
    assert normalized(sent[:first]) == normalized([f.raw for f in events[:first]])
    after = [_event(raw) for raw in sent[first:]]
    blind = after[0]
    # main/stasis_bridges.c blind_transfer_to_ami: Result, the transferer's and transferee's
    # snapshots, the bridge, IsExternal (an AMI action is external), Context, Extension.
    keys = [k for k, _ in _fields(sent[first])]
    snapshot = ["Channel", "ChannelState", "ChannelStateDesc", "CallerIDNum", "CallerIDName",
                "ConnectedLineNum", "ConnectedLineName", "Language", "AccountCode", "Context",
                "Exten", "Priority", "Uniqueid", "Linkedid", "ChanVariable", "ChanVariable"]
    assert keys == ["Event", "Privilege", "Timestamp", "SystemName", "Result",
                    *[f"Transferer{k}" for k in snapshot], *[f"Transferee{k}" for k in snapshot],
                    "BridgeUniqueid", "BridgeType", "BridgeTechnology", "BridgeCreator", "BridgeName",
                    "BridgeNumChannels", "BridgeVideoSourceMode", "IsExternal", "Context", "Extension"]
    customer, operator = blind["TransfereeChannel"], blind["TransfererChannel"]
    assert (blind["Event"], blind["Result"], blind["IsExternal"], blind["Context"],
            blind["Extension"]) == ("BlindTransfer", "Success", "Yes", "transfer", "102")
    assert customer.startswith("PJSIP/trunk-") and operator.startswith("PJSIP/101-")
    assert blind["TransfereeCallerIDNum"] == "+74951239999" and blind["BridgeNumChannels"] == "2"
    assert blind["TransfererConnectedLineNum"] == "+74951239999"  # talking to the customer
    cel = after[1]
    assert (cel["Event"], cel["EventName"], cel["Channel"]) == ("CEL", "BLINDTRANSFER", operator)
    bridge, customer_uid = blind["BridgeUniqueid"], blind["TransfereeUniqueid"]
    assert cel["Extra"] == (f'{{"extension":"102","context":"transfer","bridge_id":"{bridge}",'
                            f'"transferee_channel_name":"{customer}",'
                            f'"transferee_channel_uniqueid":"{customer_uid}"}}')
    sequence = [(e["Event"], e.get("Channel", ""), e.get("DestChannel", ""), e.get("DialStatus", ""))
                for e in after if e["Event"] in ("BridgeLeave", "BridgeEnter", "Hangup", "DialBegin",
                                                 "DialEnd", "BridgeDestroy")]
    target = next(e["DestChannel"] for e in after if e["Event"] == "DialBegin")
    assert target.startswith("PJSIP/102-")
    assert sequence == [
        ("BridgeLeave", customer, "", ""), ("BridgeLeave", operator, "", ""), ("BridgeDestroy", "", "", ""),
        ("Hangup", operator, "", ""), ("DialBegin", customer, target, ""),
        ("DialEnd", customer, target, "ANSWER"), ("BridgeEnter", target, "", ""),
        ("BridgeEnter", customer, "", ""), ("BridgeLeave", target, "", ""),
        ("BridgeLeave", customer, "", ""), ("BridgeDestroy", "", "", ""), ("Hangup", target, "", ""),
        ("Hangup", customer, "", "")]
    dial = next(e for e in after if e["Event"] == "Newexten" and e["Channel"] == customer)
    assert (dial["Context"], dial["Exten"], dial["Priority"], dial["Application"], dial["AppData"]) == \
        ("transfer", "102", "1", "Dial", "PJSIP/102,15")  # the lab's [transfer] context
    stamp = {e["Event"] + e.get("DialStatus", ""): float(e["Timestamp"]) for e in after
             if e["Event"] in ("DialBegin", "DialEnd")}
    assert stamp["DialEndANSWER"] - stamp["DialBegin"] == pytest.approx(2.0, abs=0.01)  # 102 rang 2 s
    # Everything after the transfer is an event of the trace, the Local half renamed.
    trace_names = {n.split("\r\n", 1)[0] for n in normalized([f.raw for f in events])}
    assert {n.split("\r\n", 1)[0] for n in normalized(sent[first + 2:])} <= trace_names


async def test_redirect_of_the_customer(sim: AmiSimulator, listener: Listener, traces: Path) -> None:
    sent, first, _call = await _transfer(
        sim, listener, traces,
        {"Action": "Redirect", "Channel": "<customer>", "Context": "transfer", "Exten": "102",
         "Priority": "1"},
        b"Response: Success\r\nActionID: {aid}\r\nMessage: Redirect successful\r\n\r\n")
    after = [_event(raw) for raw in sent[first:]]
    assert not any(e["Event"] in ("BlindTransfer", "AttendedTransfer") for e in after)
    assert not any(e.get("EventName") in ("BLINDTRANSFER", "ATTENDEDTRANSFER") for e in after)
    assert after[0]["Event"] == "BridgeLeave" and after[0]["Channel"].startswith("PJSIP/trunk-")
    assert [e["DialStatus"] for e in after if e["Event"] == "DialEnd"] == ["ANSWER"]


async def test_atxfer_on_a_call_that_allows_no_transfer_does_nothing(sim: AmiSimulator,
                                                                     listener: Listener) -> None:
    """The lab's plain Local-channel calls dial without `t`: Asterisk queues the feature code
    and answers, and the DTMF changes nothing (the lab README's pitfall)."""
    call = sim.add_call(sim.template("inbound_answered"), CallValues(customer="+74951234567",
                                                                     operators=["101"]))
    for _ in range(500):
        if any(ch.bridge_id for ch in call.channels()):
            break
        await asyncio.sleep(0.01)
    operator = channel_of(call, "Local/101@operators-")
    answer = await listener.answer(Action="Atxfer", Channel=operator, Context="transfer", Exten="102",
                                   ActionID="n1")
    assert answer == b"Response: Success\r\nActionID: n1\r\nMessage: Atxfer successfully queued\r\n\r\n"
    await finished(call)
    assert call.moved is None  # played exactly as the trace
    answer = await listener.answer(Action="BlindTransfer", Channel="PJSIP/101-0000ffff", Exten="102",
                                   ActionID="n2")
    assert b"Channel specified does not exist" in answer


async def test_generated_transfers_go_on_by_themselves(sim: AmiSimulator, listener: Listener) -> None:
    """Generated traffic has nobody to send the actions: the phone does what the trace's client
    did, when it did."""
    sim.settings.speed = 20.0
    for name in ("sip_attended_transfer", "sip_blind_transfer"):
        call = sim.add_call(sim.template(name), CallValues(customer="+79161234567", operators=["103", "104"]))
        await finished(call)
    names = [_event(raw)["Event"] for raw in listener.events]
    assert names.count("AttendedTransfer") == 1 and names.count("BlindTransfer") == 1
