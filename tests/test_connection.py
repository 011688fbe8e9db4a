"""PbxConnection against the simulated Asterisk over real TCP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from panoramisk import Manager

from pbx_bridge.ami.backoff import backoff_delay
from pbx_bridge.ami.connection import PbxConnection
from pbx_bridge.ami.errors import ActionFailed, ActionTimeout, PbxUnavailable
from pbx_bridge.ami.events import AmiEvent, ChannelsSnapshot, ConnectionLost, ConnectionUp
from pbx_bridge.calls.queue import QueueItem
from pbx_bridge.config import PbxConfig
from pbx_bridge.simulator.server import AmiSimulator, SimulatorSettings

pytestmark = pytest.mark.timeout(60)


def pbx_config(port: int, **overrides: Any) -> PbxConfig:
    values: dict[str, Any] = dict(name="lab", host="127.0.0.1", port=port, username="bridge",
                                  secret="simulator", ping_interval=5.0, ping_timeout=2.0,
                                  reconnect_min=0.05, reconnect_max=0.4)
    values.update(overrides)
    return PbxConfig(**values)


@pytest.fixture
async def sim() -> AsyncIterator[AmiSimulator]:
    simulator = AmiSimulator(SimulatorSettings(auth_fail_delay=0.05, seed=7))
    await simulator.start()
    yield simulator
    await simulator.stop()


async def next_item(queue: asyncio.Queue[QueueItem], match: Callable[[QueueItem], bool],
                    within: float = 5.0) -> QueueItem:
    deadline = time.monotonic() + within
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError("expected item did not arrive")
        item = await asyncio.wait_for(queue.get(), remaining)
        if match(item):
            return item


def drain(queue: asyncio.Queue[QueueItem]) -> list[QueueItem]:
    items = []
    while not queue.empty():
        items.append(queue.get_nowait())
    return items


async def until(condition: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.01)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def test_login_sends_session_settings_and_queues_up_then_snapshot(sim: AmiSimulator) -> None:
    queue: asyncio.Queue[QueueItem] = asyncio.Queue()
    conn = PbxConnection(pbx_config(sim.port), queue)
    await conn.start()
    try:
        up = await next_item(queue, lambda i: True)
        assert isinstance(up, ConnectionUp) and up.pbx == "lab"
        booted = await next_item(queue, lambda i: True)
        assert isinstance(booted, AmiEvent) and booted.name == "FullyBooted"
        snapshot = await next_item(queue, lambda i: True)
        assert isinstance(snapshot, ChannelsSnapshot) and snapshot.channels == []
        assert conn.state == "connected" and conn.asterisk_banner == "11.0.0"
        names = [a.name for a in sim.actions]
        assert names[:3] == ["Login", "Events", "CoreShowChannels"]
        assert sim.actions[0].get("Events") == "on"
        assert sim.actions[1].get("EventMask") == "on"
        pong = await conn.send_action({"Action": "Ping"})
        assert pong.get("Ping") == "Pong"
    finally:
        await conn.stop()
    assert conn.state == "stopped"
    lost = drain(queue)[-1]
    assert isinstance(lost, ConnectionLost) and lost.reason == "stopped"


async def test_wrong_credentials_auth_failed_one_log_line_slow_retries(
        sim: AmiSimulator, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    queue: asyncio.Queue[QueueItem] = asyncio.Queue()
    # reconnect_min is tiny: a fast loop would make dozens of attempts in the time we wait.
    conn = PbxConnection(pbx_config(sim.port, secret="wrong", reconnect_min=0.01,
                                    reconnect_max=0.6), queue)
    await conn.start()
    try:
        await until(lambda: conn.state == "auth_failed")
        assert "Authentication failed" in conn.last_error
        await asyncio.sleep(1.3)
        logins = [a for a in sim.actions if a.name == "Login"]
        assert 2 <= len(logins) <= 5, len(logins)
        assert conn.state == "auth_failed"
        errors = [r for r in caplog.records if r.getMessage() == "ami.auth_failed"]
        assert len(errors) == 1 and errors[0].levelno == logging.ERROR
        assert not any(isinstance(i, ConnectionUp) for i in drain(queue))
        with pytest.raises(PbxUnavailable, match="auth_failed"):
            await conn.send_action({"Action": "Ping"})
        # Fixed on the PBX side: the next slow retry logs in.
        sim.settings.secret = "wrong"
        await next_item(queue, lambda i: isinstance(i, ConnectionUp), within=3)
        await next_item(queue, lambda i: isinstance(i, ChannelsSnapshot))
        assert conn.state == "connected" and conn.last_error == ""
    finally:
        await conn.stop()


async def test_keepalive_detects_half_open_connection_and_reconnects(sim: AmiSimulator) -> None:
    queue: asyncio.Queue[QueueItem] = asyncio.Queue()
    conn = PbxConnection(pbx_config(sim.port, ping_interval=0.2, ping_timeout=0.3), queue)
    await conn.start()
    try:
        await next_item(queue, lambda i: isinstance(i, ChannelsSnapshot))
        await asyncio.sleep(0.5)  # a few pings answered: no reconnect while healthy
        assert conn.logins == 1
        frozen_at = time.monotonic()
        assert sim.freeze_clients() == 1  # socket stays open, nothing answers
        lost = await next_item(queue, lambda i: isinstance(i, ConnectionLost), within=3)
        assert isinstance(lost, ConnectionLost) and "Ping" in lost.reason
        assert time.monotonic() - frozen_at < 0.2 + 0.3 + 0.5
        await next_item(queue, lambda i: isinstance(i, ConnectionUp), within=3)
        await next_item(queue, lambda i: isinstance(i, ChannelsSnapshot))
        assert conn.state == "connected" and conn.logins == 2
    finally:
        await conn.stop()


def test_backoff_doubles_to_the_cap_with_jitter() -> None:
    steps = [backoff_delay(n, 0.5, 30.0, 0.999999) for n in range(10)]
    assert steps[:6] == pytest.approx([0.5, 1, 2, 4, 8, 16], rel=1e-4)
    assert steps[6:] == pytest.approx([30.0] * 4, rel=1e-4)
    assert backoff_delay(3, 0.5, 30.0, 0.0) == pytest.approx(2.0)  # half the step at worst
    assert backoff_delay(500, 0.5, 30.0, 0.5) == pytest.approx(22.5)


async def test_reconnect_backoff_timing_over_tcp() -> None:
    """A server that accepts and hangs up at once: attempts spaced by the capped backoff."""
    accepted: list[float] = []

    async def slam(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(time.monotonic())
        writer.close()

    server = await asyncio.start_server(slam, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    queue: asyncio.Queue[QueueItem] = asyncio.Queue()
    jitter = iter([0.0, 0.999] * 50)
    conn = PbxConnection(pbx_config(port, reconnect_min=0.05, reconnect_max=0.4), queue,
                         rand=lambda: next(jitter))
    await conn.start()
    try:
        await until(lambda: len(accepted) >= 8, within=10)
    finally:
        await conn.stop()
        server.close()
        await server.wait_closed()
    gaps = [b - a for a, b in itertools.pairwise(accepted)][:7]
    expected = [backoff_delay(n, 0.05, 0.4, r) for n, r in enumerate([0.0, 0.999] * 4)][:7]
    # 0.025, 0.1, 0.1, 0.4, 0.2, 0.4, 0.2: doubling, jittered, never past the cap
    for gap, want in zip(gaps, expected, strict=True):
        assert want - 0.01 <= gap <= want + 0.15, (gaps, expected)
    assert max(gaps) <= 0.4 + 0.15
    assert conn.state == "stopped"
    assert not any(isinstance(i, ConnectionUp) for i in drain(queue))


async def test_after_reconnect_settings_resent_and_snapshot_has_live_channels(
        sim: AmiSimulator) -> None:
    sim.settings.speed = 0.2  # the call stays up well past the reconnect
    queue: asyncio.Queue[QueueItem] = asyncio.Queue()
    conn = PbxConnection(pbx_config(sim.port), queue)
    await conn.start()
    try:
        await next_item(queue, lambda i: isinstance(i, ChannelsSnapshot))
        await conn.originate({"Channel": "Local/101@op-phone/n", "Context": "from-internal",
                              "Exten": "89035550199", "Priority": "1", "ChannelId": "chan-1",
                              "Variable": "__CALL_ID=c2c-7"})
        await until(lambda: len(sim.live_channels()) >= 2)
        assert sim.drop_clients() == 1
        lost = await next_item(queue, lambda i: isinstance(i, ConnectionLost))
        assert isinstance(lost, ConnectionLost)
        await next_item(queue, lambda i: isinstance(i, ConnectionUp))
        snapshot = await next_item(queue, lambda i: isinstance(i, ChannelsSnapshot))
        assert isinstance(snapshot, ChannelsSnapshot)
        live = {c.fields["Channel"] for c in sim.live_channels()}
        got = {c.headers["Channel"] for c in snapshot.channels}
        assert got and got <= live | got and got == live
        first = next(c for c in snapshot.channels if c.headers["Uniqueid"] == "chan-1")
        assert first.headers["Linkedid"] == "chan-1"
        assert first.variables["CALL_ID"] == "c2c-7"
        assert first.headers["Duration"].count(":") == 2 and "BridgeId" in first.headers
        names = [a.name for a in sim.actions]
        assert names.count("Events") == 2 and names.count("Login") == 2
        assert names.count("CoreShowChannels") == 2
    finally:
        await conn.stop()


async def test_utf8_split_across_tcp_writes_arrives_intact(sim: AmiSimulator) -> None:
    queue: asyncio.Queue[QueueItem] = asyncio.Queue()
    conn = PbxConnection(pbx_config(sim.port), queue)
    # A stock panoramisk Manager on the same stream proves that the split really happened
    # between two reads: it loses the character (pitfall 3).
    bare_names: list[str] = []
    bare = Manager(loop=asyncio.get_running_loop(), host="127.0.0.1", port=sim.port,
                   username="bridge", secret="simulator", ping_delay=3600, ping_interval=3600)
    bare.register_event("NewCallerid", lambda _m, msg: bare_names.append(msg["CallerIDName"]))
    bare.connect()
    await conn.start()
    try:
        await next_item(queue, lambda i: isinstance(i, ChannelsSnapshot))
        await sim.wait_logins(2)
        message = ("Event: NewCallerid\r\nChannel: PJSIP/trunk-00000001\r\n"
                   "CallerIDName: Иван Петров\r\nUniqueid: 1.1\r\n\r\n").encode()
        cut = message.index("Иван".encode()) + 1  # inside the two bytes of "И"
        sim.send_raw(message[:cut])
        await sim.drain()
        await asyncio.sleep(0.1)  # a separate TCP read
        sim.send_raw(message[cut:])
        event = await next_item(queue, lambda i: isinstance(i, AmiEvent) and i.name == "NewCallerid")
        assert isinstance(event, AmiEvent)
        assert event.headers["CallerIDName"] == "Иван Петров"
        await until(lambda: bool(bare_names))
        assert bare_names == ["ван Петров"]
    finally:
        bare.close()
        await conn.stop()


async def test_garbage_on_the_wire_does_not_stop_later_events(sim: AmiSimulator) -> None:
    queue: asyncio.Queue[QueueItem] = asyncio.Queue()
    conn = PbxConnection(pbx_config(sim.port), queue)
    await conn.start()
    try:
        await next_item(queue, lambda i: isinstance(i, ChannelsSnapshot))
        sim.send_raw(b"this is not a header\r\nnor: \r\n\r\n")  # malformed
        sim.send_raw(bytes(range(256)) * 4 + b"\r\n\r\n")  # binary junk
        sim.send_raw(b"X" * 1_000_000 + b"\r\n")  # a 1 MB line
        sim.send_raw(b"Event: UserEvent\r\nName: \xff\xfe caf\xc3\r\n\r\n")  # invalid UTF-8
        sim.send_raw(b"Event: Hangup\r\nChannel: PJSIP/101-00000002\r\nUniqueid: 9.9\r\n"
                     b"ChanVariable: CALL_ID=abc\r\nChanVariable: DIRECTION=inbound\r\n\r\n")
        bad = await next_item(queue, lambda i: isinstance(i, AmiEvent) and i.name == "UserEvent")
        assert isinstance(bad, AmiEvent) and "\ufffd" in bad.headers["Name"]
        after = await next_item(queue, lambda i: isinstance(i, AmiEvent) and i.name == "Hangup")
        assert isinstance(after, AmiEvent)
        assert after.headers["Uniqueid"] == "9.9"
        assert after.variables == {"CALL_ID": "abc", "DIRECTION": "inbound"}
        pong = await conn.send_action({"Action": "Ping"})
        assert pong.get("Ping") == "Pong"
        assert conn.logins == 1  # kept running, no reconnect needed
    finally:
        await conn.stop()


async def test_originate_flow_with_our_channel_id_and_call_id(sim: AmiSimulator) -> None:
    sim.settings.speed = 50
    queue: asyncio.Queue[QueueItem] = asyncio.Queue()
    conn = PbxConnection(pbx_config(sim.port), queue)
    await conn.start()
    try:
        await next_item(queue, lambda i: isinstance(i, ChannelsSnapshot))
        response = await conn.originate({
            "Channel": "Local/102@op-phone/n", "Context": "from-internal",
            "Exten": "89161234567", "Priority": "1", "CallerID": "<102>",
            "ChannelId": "5b3c2a9e-0000-4000-8000-000000000001",
            "Variable": ["__CALL_ID=crm-42", "__DIRECTION=outbound"], "Async": "true",
        })
        assert response.message == "Originate successfully queued"
        sent = [a for a in sim.actions if a.name == "Originate"]
        assert len(sent) == 1 and sent[0].get("Async") == "true"
        events: list[AmiEvent] = []
        while True:
            item = await next_item(queue, lambda i: isinstance(i, AmiEvent))
            assert isinstance(item, AmiEvent)
            events.append(item)
            if item.name == "Hangup" and item.headers.get("Channel", "").startswith("Local/8916"):
                if item.headers["Channel"].endswith(";2"):
                    break
        call_events = [e for e in events if "Linkedid" in e.headers]
        assert call_events and all(e.headers["Linkedid"] == "5b3c2a9e-0000-4000-8000-000000000001"
                                   for e in call_events)
        first = next(e for e in events if e.name == "Newchannel")
        assert first.headers["Uniqueid"] == "5b3c2a9e-0000-4000-8000-000000000001"
        assert first.headers["Channel"].startswith("Local/102@op-phone-")
        assert any(e.variables.get("CALL_ID") == "crm-42" for e in events)
        originate_response = next(e for e in events if e.name == "OriginateResponse")
        assert originate_response.headers["ActionID"] == response.get("ActionID")
        assert originate_response.headers["Reason"] == "4"
        assert originate_response.variables["CALL_ID"] == "crm-42"
        dials = [e.headers["DestChannel"] for e in events if e.name == "DialBegin"]
        assert any(d.startswith("Local/89161234567@pstn-") for d in dials), dials
    finally:
        await conn.stop()


async def test_originate_is_never_resent_after_a_drop(sim: AmiSimulator) -> None:
    queue: asyncio.Queue[QueueItem] = asyncio.Queue()
    conn = PbxConnection(pbx_config(sim.port), queue)
    await conn.start()

    def cut_on_originate(session: Any, action: Any) -> bool:
        if action.name == "Originate":
            session.abort()  # the PBX got it, the answer never comes back
            return True
        return False

    sim.action_hook = cut_on_originate
    try:
        await next_item(queue, lambda i: isinstance(i, ChannelsSnapshot))
        with pytest.raises(PbxUnavailable):
            await conn.originate({"Channel": "Local/101@op-phone/n", "Exten": "89161234567",
                                  "Context": "from-internal", "Priority": "1",
                                  "ChannelId": "once-only"}, timeout=3)
        await next_item(queue, lambda i: isinstance(i, ConnectionUp))
        await next_item(queue, lambda i: isinstance(i, ChannelsSnapshot))
        await asyncio.sleep(0.3)
        assert [a.name for a in sim.actions].count("Originate") == 1
        assert conn._manager is not None and not conn._manager.awaiting_actions
    finally:
        await conn.stop()


async def test_actions_errors_timeouts_and_unavailable(sim: AmiSimulator) -> None:
    queue: asyncio.Queue[QueueItem] = asyncio.Queue()
    conn = PbxConnection(pbx_config(sim.port, ping_interval=30), queue)
    with pytest.raises(PbxUnavailable):
        await conn.send_action({"Action": "Ping"})  # never started
    await conn.start()
    try:
        await next_item(queue, lambda i: isinstance(i, ChannelsSnapshot))
        with pytest.raises(ActionFailed, match="Invalid/unknown command"):
            await conn.send_action({"Action": "NoSuchThing"})
        with pytest.raises(ValueError, match="line break"):
            await conn.send_action({"Action": "Ping", "X": "a\r\nAction: Originate"})
        with pytest.raises(ValueError, match="ChannelId"):
            await conn.originate({"Channel": "Local/101@op-phone/n", "Exten": "1"})
        with pytest.raises(ValueError, match="Async"):
            await conn.originate({"Channel": "x", "ChannelId": "y", "Async": "false"})
        listed = await conn.send_action({"Action": "CoreShowChannels"})
        assert listed.get("EventList") == "start"
        assert [e.name for e in listed.events] == ["CoreShowChannelsComplete"]
        sim.freeze_clients()
        with pytest.raises(ActionTimeout):
            await conn.send_action({"Action": "Ping"}, timeout=0.2)
        sim.drop_clients()
        await next_item(queue, lambda i: isinstance(i, ConnectionLost))
        if conn.state != "connected":
            with pytest.raises(PbxUnavailable):
                await conn.send_action({"Action": "Ping"})
    finally:
        await conn.stop()


async def test_stop_cancels_scheduled_reconnects() -> None:
    port = free_port()  # nothing listens: the connection keeps retrying
    queue: asyncio.Queue[QueueItem] = asyncio.Queue()
    conn = PbxConnection(pbx_config(port, reconnect_min=0.05, reconnect_max=0.1), queue)
    await conn.start()
    await until(lambda: bool(conn.last_error))
    await conn.stop()
    assert conn.state == "stopped"
    simulator = AmiSimulator(SimulatorSettings(port=port))
    await simulator.start()
    try:
        await asyncio.sleep(0.5)
        assert not simulator.actions and simulator.sessions == []
    finally:
        await simulator.stop()
    with pytest.raises(PbxUnavailable):
        await conn.send_action({"Action": "Ping"})


async def test_full_bounded_queue_pauses_reading_and_loses_nothing(sim: AmiSimulator) -> None:
    queue: asyncio.Queue[QueueItem] = asyncio.Queue(maxsize=3)
    conn = PbxConnection(pbx_config(sim.port), queue)
    await conn.start()
    try:
        await next_item(queue, lambda i: isinstance(i, ChannelsSnapshot))
        for n in range(200):
            sim.send_raw(f"Event: UserEvent\r\nUserEvent: n{n}\r\n\r\n".encode())
        seen = []
        while len(seen) < 200:
            item = await asyncio.wait_for(queue.get(), 5)
            if isinstance(item, AmiEvent) and item.name == "UserEvent":
                seen.append(item.headers["UserEvent"])
            await asyncio.sleep(0.001)  # a slow consumer
        assert seen == [f"n{n}" for n in range(200)]
    finally:
        await conn.stop()


async def test_unanswered_events_action_is_not_fatal(sim: AmiSimulator,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    """manager.conf `broken_events_action = yes`: Asterisk does not answer `Events: on`."""
    sim.action_hook = lambda session, action: action.name == "Events"
    queue: asyncio.Queue[QueueItem] = asyncio.Queue()
    conn = PbxConnection(pbx_config(sim.port, ping_timeout=0.3), queue)
    await conn.start()
    try:
        snapshot = await next_item(queue, lambda i: isinstance(i, ChannelsSnapshot), within=10)
        assert isinstance(snapshot, ChannelsSnapshot)
        assert conn.state == "connected" and conn.logins == 1
        assert any(r.getMessage() == "ami.events_unanswered" for r in caplog.records)
    finally:
        await conn.stop()
