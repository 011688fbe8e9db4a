"""The simulated Asterisk, over real TCP: byte-exact replay, protocol answers, generated traffic,
originate, hangup, MixMonitor files, several clients, the `simulate` command."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from pbx_bridge.ami.connection import PbxConnection
from pbx_bridge.ami.errors import ActionFailed
from pbx_bridge.ami.events import AmiEvent, ChannelsSnapshot, ConnectionUp
from pbx_bridge.calls.queue import QueueItem
from pbx_bridge.simulator import media
from pbx_bridge.simulator.server import AmiSimulator, SimulatorSettings
from pbx_bridge.simulator.templates import broadcast_events
from pbx_bridge.simulator.trace import parse_trace, read_trace
from tests.test_connection import free_port, next_item, pbx_config, until

pytestmark = pytest.mark.timeout(90)
ROOT = Path(__file__).resolve().parent.parent
ALL_TRACES = ["inbound_answered", "inbound_answered_recorded", "inbound_noanswer", "inbound_busy",
              "queue_ringall_answered", "outbound_answered", "click_to_call", "internal_call",
              "resync_mid_call", "sip_inbound_answered_recorded"]


class RawClient:
    """A bare AMI client: writes actions, reads bytes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int) -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        client = cls(reader, writer)
        assert await reader.readline() == b"Asterisk Call Manager/11.0.0\r\n"
        return client

    async def action(self, **fields: str) -> None:
        self.writer.write(("".join(f"{k}: {v}\r\n" for k, v in fields.items()) + "\r\n").encode())
        await self.writer.drain()

    async def message(self) -> bytes:
        return await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 5.0)

    async def login(self, secret: str = "simulator") -> bytes:
        await self.action(Action="Login", Username="bridge", Secret=secret)
        return await self.message()

    async def read_exactly(self, size: int) -> bytes:
        return await asyncio.wait_for(self.reader.readexactly(size), 10.0)

    def close(self) -> None:
        self.writer.close()


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[AmiSimulator]:
    simulator = AmiSimulator(SimulatorSettings(auth_fail_delay=0.05, seed=3,
                                               spool_dir=tmp_path / "spool"))
    await simulator.start()
    yield simulator
    await simulator.stop()


@pytest.mark.parametrize("name", ALL_TRACES)
async def test_replay_sends_exactly_the_traces_event_frames(sim: AmiSimulator, traces: Path,
                                                            name: str) -> None:
    frames = read_trace(traces / f"{name}.ami")
    expected = broadcast_events(frames)
    # Only what answered the recording client's own actions (and its login) is left out.
    left_out = [f for f in frames if f.kind == "event" and f not in expected]
    assert all(f.name == "FullyBooted" or f.get("ActionID") for f in left_out)
    assert len(expected) > 20
    client = await RawClient.connect(sim.port)
    try:
        assert (await client.login()).startswith(b"Response: Success\r\n")
        assert (await client.message()).startswith(b"Event: FullyBooted\r\n")
        sent = await sim.replay([traces / f"{name}.ami"], speed=0)
        assert sent == len(expected)
        data = await client.read_exactly(sum(len(f.raw) for f in expected))
        assert data == b"".join(f.raw for f in expected)
        got = [f for f in parse_trace(data) if f.kind == "event"]
        assert [f.headers for f in got] == [f.headers for f in expected]
    finally:
        client.close()


async def test_replay_keeps_original_timing_scaled_and_can_shift_timestamps(
        sim: AmiSimulator, traces: Path) -> None:
    client = await RawClient.connect(sim.port)
    try:
        await client.login()
        await client.message()
        expected = broadcast_events(read_trace(traces / "inbound_noanswer.ami"))
        span = expected[-1].timestamp - expected[0].timestamp  # type: ignore[operator]
        started = time.monotonic()
        await sim.replay([traces / "inbound_noanswer.ami"], speed=8, now_timestamps=True)
        elapsed = time.monotonic() - started
        assert span / 8 - 0.05 <= elapsed <= span / 8 + 0.5
        got = []
        while len(got) < len(expected):
            got.append(parse_trace(await client.message())[0])
        assert abs(got[0].timestamp - time.time()) < span + 2  # type: ignore[operator]
        shift = got[0].timestamp - expected[0].timestamp  # type: ignore[operator]
        for mine, orig in zip(got, expected, strict=True):
            assert mine.timestamp == pytest.approx(orig.timestamp + shift, abs=2e-6)  # type: ignore[operator]
            assert [h for h in mine.headers if h[0] != "Timestamp"] == \
                [h for h in orig.headers if h[0] != "Timestamp"]
    finally:
        client.close()


async def test_login_refused_like_asterisk(sim: AmiSimulator) -> None:
    client = await RawClient.connect(sim.port)
    await client.action(Action="Login", ActionID="a1", Username="bridge", Secret="nope")
    assert await client.message() == \
        b"Response: Error\r\nActionID: a1\r\nMessage: Authentication failed\r\n\r\n"
    assert await client.reader.read() == b""  # and the PBX hangs up
    client = await RawClient.connect(sim.port)
    await client.action(Action="Ping", ActionID="p0")
    assert await client.message() == \
        b"Response: Error\r\nActionID: p0\r\nMessage: Authentication Required\r\n\r\n"
    client.close()


async def test_ping_events_and_unknown_action_answers(sim: AmiSimulator) -> None:
    client = await RawClient.connect(sim.port)
    try:
        assert await client.login() == b"Response: Success\r\nMessage: Authentication accepted\r\n\r\n"
        booted = await client.message()
        assert re.fullmatch(rb"Event: FullyBooted\r\nPrivilege: system,all\r\nUptime: \d+\r\n"
                            rb"LastReload: \d+\r\nStatus: Fully Booted\r\n\r\n", booted)
        await client.action(Action="Ping", ActionID="p1")
        assert re.fullmatch(rb"Response: Success\r\nActionID: p1\r\nPing: Pong\r\n"
                            rb"Timestamp: \d{10}\.\d{6}\r\n\r\n", await client.message())
        await client.action(Action="Events", ActionID="e1", EventMask="on")
        assert await client.message() == b"Response: Success\r\nActionID: e1\r\nEvents: On\r\n\r\n"
        await client.action(Action="Frobnicate", ActionID="f1")
        assert await client.message() == \
            b"Response: Error\r\nActionID: f1\r\nMessage: Invalid/unknown command\r\n\r\n"
        await client.action(Action="Logoff")
        assert await client.message() == b"Response: Goodbye\r\nMessage: Thanks for all the fish.\r\n\r\n"
    finally:
        client.close()


async def test_core_show_channels_from_current_state_in_trace_format(
        sim: AmiSimulator, traces: Path) -> None:
    sim.settings.speed = 0.5
    reference = [f for f in read_trace(traces / "click_to_call.ami") if f.name == "CoreShowChannel"]
    client = await RawClient.connect(sim.port)
    try:
        await client.login()
        await client.message()
        await client.action(Action="Events", EventMask="off")
        await client.message()
        await client.action(Action="Originate", ActionID="o1", Channel="Local/103@op-phone/n",
                            Context="from-internal", Exten="89035550199", Priority="1",
                            Async="true", ChannelId="cid-1", Variable="__CALL_ID=c-1")
        assert await client.message() == \
            b"Response: Success\r\nActionID: o1\r\nMessage: Originate successfully queued\r\n\r\n"
        await until(lambda: len(sim.live_channels()) >= 4)
        await asyncio.sleep(1.1)
        await client.action(Action="CoreShowChannels", ActionID="l1")
        assert await client.message() == \
            b"Response: Success\r\nActionID: l1\r\nEventList: start\r\nMessage: Channels will follow\r\n\r\n"
        listed = []
        while True:
            frame = parse_trace(await client.message())[0]
            if frame.name == "CoreShowChannelsComplete":
                break
            listed.append(frame)
        assert frame.headers == [("Event", "CoreShowChannelsComplete"), ("ActionID", "l1"),
                                 ("EventList", "Complete"), ("ListItems", str(len(listed)))]
        assert len(listed) == len(sim.live_channels()) >= 4
        for got in listed:
            assert [k for k, _ in got.headers] == [k for k, _ in reference[0].headers]
            assert got.get("Linkedid") == "cid-1"
            assert got.get("Duration") >= "00:00:01"
        op = next(f for f in listed if f.get("Uniqueid") == "cid-1")
        assert op.get("Channel").startswith("Local/103@op-phone-") and op.get("Channel").endswith(";1")
        assert ("ChanVariable", "CALL_ID=c-1") in op.headers
    finally:
        client.close()


async def test_mixmonitor_writes_what_the_channel_read_and_heard(sim: AmiSimulator,
                                                                 tmp_path: Path) -> None:
    """MixMonitor bD on a bridged channel: from its start to its stop (the MixMonitorStart and
    MixMonitorStop events' Timestamps), left = what the channel read (the operator's voice),
    right = what it heard (the customer's), sample for sample on the absolute sample clock."""
    sim.settings.speed = 0.5
    queue: asyncio.Queue[QueueItem] = asyncio.Queue()
    conn = PbxConnection(pbx_config(sim.port), queue)
    await conn.start()
    try:
        await next_item(queue, lambda i: isinstance(i, ChannelsSnapshot))
        await conn.originate({"Channel": "Local/101@op-phone/n", "Context": "from-internal",
                              "Exten": "89035550199", "Priority": "1", "ChannelId": "rec-call"})
        entered = await next_item(queue, lambda i: isinstance(i, AmiEvent) and i.name == "BridgeEnter"
                                  and i.headers["Channel"].startswith("Local/101@op-phone-"), within=20)
        assert isinstance(entered, AmiEvent)
        channel = entered.headers["Channel"]
        answer = await conn.send_action({"Action": "MixMonitor", "Channel": channel,
                                         "File": "rec-call.raw", "Options": "bDi(MON_ID)"})
        assert answer.get("Response") == "Success"
        monitor_id = answer.get("MixMonitorID")
        assert monitor_id.startswith("0x")  # only with option i(VAR), as in app_mixmonitor.c
        path = tmp_path / "spool" / "monitor" / "rec-call.raw"
        assert path.exists() and path.stat().st_size == 0  # opened at once, written as it goes
        var = await next_item(queue, lambda i: isinstance(i, AmiEvent) and i.name == "VarSet"
                              and i.headers.get("Variable") == "MIXMONITOR_FILENAME")
        assert isinstance(var, AmiEvent) and var.headers["Value"] == str(path)
        start = await next_item(queue, lambda i: isinstance(i, AmiEvent) and i.name == "MixMonitorStart")
        assert isinstance(start, AmiEvent) and start.headers["Channel"] == channel
        assert start.timestamp == var.timestamp
        await asyncio.sleep(0.6)
        with pytest.raises(ActionFailed, match="Could not stop monitoring channel"):
            await conn.send_action({"Action": "StopMixMonitor", "Channel": channel,
                                    "MixMonitorID": "0xwrong"})
        await conn.send_action({"Action": "StopMixMonitor", "Channel": channel,
                                "MixMonitorID": monitor_id})
        stop = await next_item(queue, lambda i: isinstance(i, AmiEvent) and i.name == "MixMonitorStop")
        assert isinstance(stop, AmiEvent)
        first, last = media.sample_at(start.timestamp), media.sample_at(stop.timestamp)
        data = np.frombuffer(path.read_bytes(), dtype="<i2").reshape(-1, 2)
        assert len(data) == last - first >= 0.55 * 8000 * 0.5  # 0.6 s at half speed, in Asterisk time
        assert np.array_equal(data[:, 0], media.mix(["op:101"], first, len(data)))
        assert np.array_equal(data[:, 1], media.mix(["customer"], first, len(data)))
        with pytest.raises(ActionFailed, match="Could not start monitoring channel"):
            await conn.send_action({"Action": "MixMonitor", "Channel": channel,
                                    "File": "/etc/evil.raw", "Options": "bD"})  # outside the spool
        assert not os.path.exists("/etc/evil.raw")  # noqa: ASYNC240
        with pytest.raises(ActionFailed, match="No such channel"):
            await conn.send_action({"Action": "MixMonitor", "Channel": "PJSIP/nobody-1",
                                    "File": "x.raw"})
    finally:
        await conn.stop()


async def test_hangup_action_ends_the_call_and_its_recording(sim: AmiSimulator, tmp_path: Path) -> None:
    sim.settings.speed = 0.3
    queue: asyncio.Queue[QueueItem] = asyncio.Queue()
    conn = PbxConnection(pbx_config(sim.port), queue)
    await conn.start()
    try:
        await next_item(queue, lambda i: isinstance(i, ChannelsSnapshot))
        await conn.originate({"Channel": "Local/102@op-phone/n", "Context": "from-internal",
                              "Exten": "89035550199", "Priority": "1", "ChannelId": "hang-1"})
        await until(lambda: len(sim.live_channels()) >= 2)
        channel = next(c.fields["Channel"] for c in sim.live_channels()
                       if c.fields["Uniqueid"] == "hang-1")
        await conn.send_action({"Action": "MixMonitor", "Channel": channel, "File": "h.raw",
                                "Options": "bD"})
        answer = await conn.send_action({"Action": "Hangup", "Channel": channel})
        assert answer.message == "Channel Hungup"
        await next_item(queue, lambda i: isinstance(i, AmiEvent) and i.name == "Hangup"
                        and i.headers.get("Uniqueid") == "hang-1", within=3)
        await until(lambda: not sim.live_channels(), within=10)
        await until(lambda: (tmp_path / "spool" / "monitor" / "h.raw").stat().st_size > 0)
        with pytest.raises(ActionFailed, match="No such channel"):
            await conn.send_action({"Action": "Hangup", "Channel": channel})
    finally:
        await conn.stop()


async def test_generator_makes_fresh_realistic_calls_to_every_client(sim: AmiSimulator) -> None:
    sim.settings.speed = 40
    sim.settings.operators = ("201", "202", "203")
    queues = [asyncio.Queue[QueueItem](), asyncio.Queue[QueueItem]()]
    conns = [PbxConnection(pbx_config(sim.port, name=f"c{i}"), q) for i, q in enumerate(queues)]
    for conn in conns:
        await conn.start()
    try:
        for q in queues:
            await next_item(q, lambda i: isinstance(i, ChannelsSnapshot))
        sim.start_generator(30, max_calls=12)
        await asyncio.sleep(0.5)
        await until(lambda: not sim.calls, within=20)
        await asyncio.sleep(0.2)
        streams = []
        for q in queues:
            items = []
            while not q.empty():
                item = q.get_nowait()
                if isinstance(item, AmiEvent):
                    items.append(item)
            streams.append(items)
        assert streams[0] and [(e.name, e.headers) for e in streams[0]] == \
            [(e.name, e.headers) for e in streams[1]]
        events = streams[0]
        linkedids = {e.headers["Linkedid"] for e in events if "Linkedid" in e.headers}
        assert len(linkedids) == 12
        originals = set()
        for trace in (ROOT / "pbx_bridge" / "simulator" / "data").glob("*.ami"):
            originals |= {f.get("Linkedid") for f in read_trace(trace) if f.get("Linkedid")}
        assert not linkedids & originals
        for e in events:
            values = [*e.headers.values(), *e.variables.values()]
            assert not any(re.search(r"\{\w+\}", v) for v in values)  # every slot filled
            if e.name == "Newchannel":
                assert e.headers["Uniqueid"] not in originals
        callers = {e.headers["CallerIDNum"] for e in events
                   if e.name == "NewCallerid" and e.headers["Channel"].startswith("Local/cust@")}
        # +7... as the trunk presents it, or 8... (national) as in inbound_noanswer.ami
        assert callers and all(re.fullmatch(r"(\+7|8)\d{10}", c) for c in callers)
        operators = {m.group(1) for e in events
                     for m in [re.match(r"Local/(\d+)@operators-", e.headers.get("Channel", ""))] if m}
        assert operators and operators <= {"201", "202", "203"}
        hangups = {e.headers["Uniqueid"] for e in events if e.name == "Hangup"}
        created = {e.headers["Uniqueid"] for e in events if e.name == "Newchannel"}
        assert created == hangups  # every call ended: nothing left live
        assert sim.live_channels() == []
    finally:
        for conn in conns:
            await conn.stop()


async def test_blast_delivers_every_event(sim: AmiSimulator) -> None:
    queue: asyncio.Queue[QueueItem] = asyncio.Queue()
    conn = PbxConnection(pbx_config(sim.port), queue)
    await conn.start()
    try:
        await next_item(queue, lambda i: isinstance(i, ChannelsSnapshot))
        before = conn.events_received
        sent = await sim.blast(30, concurrent=10)
        await until(lambda: conn.events_received - before >= sent)
        assert conn.events_received - before == sent > 30 * 90
    finally:
        await conn.stop()


async def test_resync_replay_state_shows_in_snapshot_after_a_cut(sim: AmiSimulator,
                                                                 traces: Path) -> None:
    queue: asyncio.Queue[QueueItem] = asyncio.Queue()
    conn = PbxConnection(pbx_config(sim.port), queue)
    await conn.start()
    try:
        await next_item(queue, lambda i: isinstance(i, ChannelsSnapshot))
        # The trace's events span 3 ms; slowed down 1000 times the call stays up while the
        # client, cut after the first event, reconnects.
        replay = asyncio.create_task(sim.replay([traces / "resync_mid_call.ami"], speed=0.001,
                                                cut_after=[0]))
        await next_item(queue, lambda i: isinstance(i, ConnectionUp))
        snapshot = await next_item(queue, lambda i: isinstance(i, ChannelsSnapshot))
        assert isinstance(snapshot, ChannelsSnapshot)
        linked = {c.headers["Linkedid"] for c in snapshot.channels}
        assert linked == {"b551c776-3d18-4edf-b541-b5e26f7d69cc"}
        assert len(snapshot.channels) == 4
        assert all(c.headers["Duration"] >= "00:00:05" for c in snapshot.channels)
        await replay
    finally:
        await conn.stop()


def test_simulate_command_serves_generated_calls(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "PBX_BRIDGE_SERVER__DATA_DIR": str(tmp_path), "PYTHONFAULTHANDLER": "1",
           "PBX_BRIDGE_LOGGING__LEVEL": "DEBUG"}
    log_file = (tmp_path / "stderr.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pbx_bridge", "simulate", "--listen", f"127.0.0.1:{port}",
         "--calls-per-second", "2", "--speed", "5"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=log_file, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert f"127.0.0.1:{port}" in line

        async def listen() -> list[QueueItem]:
            queue: asyncio.Queue[QueueItem] = asyncio.Queue()
            conn = PbxConnection(pbx_config(port), queue)
            await conn.start()
            try:
                await next_item(queue, lambda i: isinstance(i, AmiEvent) and i.name == "Newchannel",
                                within=10)
            finally:
                await conn.stop()
            return []

        asyncio.run(listen())
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)  # faulthandler: where it hangs, in the log
            code = proc.wait()
        log_file.close()
    log = (tmp_path / "stderr.log").read_text()
    assert code == 0, log
    assert "simulator.stopped" in log
    assert "error" not in log.lower() and "Traceback" not in log, log


def test_simulate_command_rejects_bad_arguments() -> None:
    result = subprocess.run([sys.executable, "-m", "pbx_bridge", "simulate", "--listen", "nowhere"],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip() == \
        "pbx-bridge: --listen 'nowhere': expected HOST:PORT, e.g. 127.0.0.1:15038"
    result = subprocess.run([sys.executable, "-m", "pbx_bridge", "simulate", "--trace", "/no/such.ami"],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "no such file" in result.stderr


async def _originate_and_collect(sim: AmiSimulator, fields: dict[str, str]) -> list[AmiEvent]:
    queue: asyncio.Queue[QueueItem] = asyncio.Queue()
    conn = PbxConnection(pbx_config(sim.port), queue)
    await conn.start()
    try:
        await next_item(queue, lambda i: isinstance(i, ChannelsSnapshot))
        await conn.originate(fields)
        await asyncio.sleep(0.2)
        await until(lambda: not sim.calls, within=15)
        await asyncio.sleep(0.1)
        events = []
        while not queue.empty():
            item = queue.get_nowait()
            if isinstance(item, AmiEvent):
                events.append(item)
        return events
    finally:
        await conn.stop()


async def test_originate_customer_busy(sim: AmiSimulator) -> None:
    sim.settings.speed = 20
    sim.settings.originate_outcome = "customer_busy"
    events = await _originate_and_collect(sim, {
        "Channel": "Local/103@op-phone/n", "Context": "from-internal", "Exten": "89161112233",
        "Priority": "1", "ChannelId": "busy-1", "Variable": "__CALL_ID=crm-busy"})
    assert all(e.headers["Linkedid"] == "busy-1" for e in events if "Linkedid" in e.headers)
    # every channel ends carrying the request's CALL_ID (new channels start without it)
    assert all(e.variables["CALL_ID"] == "crm-busy" for e in events if e.name == "Hangup")
    response = next(e for e in events if e.name == "OriginateResponse")
    assert (response.headers["Response"], response.headers["Reason"]) == ("Success", "4")
    assert response.headers["Exten"] == "89161112233"
    ends = [(e.headers.get("Channel", ""), e.headers["DialStatus"]) for e in events
            if e.name == "DialEnd"]
    assert ends[-1][1] == "BUSY" and ends[-1][0].startswith("Local/103@op-phone-")
    causes = {e.headers["Channel"]: e.headers["Cause"] for e in events if e.name == "Hangup"}
    busy_leg = next(ch for ch in causes if ch.startswith("Local/89161112233@pstn-") and ch.endswith(";2"))
    assert causes[busy_leg] == "17"  # User busy, as in inbound_busy.ami
    assert len(causes) == 4 and sim.live_channels() == []
    assert not any(e.name in ("BridgeEnter", "QueueMemberStatus") for e in events)


async def test_originate_operator_does_not_answer(sim: AmiSimulator) -> None:
    sim.settings.speed = 10
    sim.settings.originate_outcome = "operator_no_answer"
    started = time.monotonic()
    events = await _originate_and_collect(sim, {
        "Channel": "Local/101@op-phone/n", "Context": "from-internal", "Exten": "89031234567",
        "Priority": "1", "ChannelId": "na-1", "Variable": "__CALL_ID=crm-na", "Timeout": "5000"})
    assert time.monotonic() - started >= 5.0 / 10
    response = events[-1]
    assert response.name == "OriginateResponse"
    assert response.headers["Response"] == "Failure" and response.headers["Reason"] == "3"
    assert response.headers["Channel"] == "Local/101@op-phone/n"  # as requested
    assert response.headers["Uniqueid"] == "na-1" and response.variables == {}
    assert [e.headers["DialStatus"] for e in events if e.name in ("DialState", "DialEnd")] == \
        ["RINGING", "NOANSWER"]
    assert not any("@pstn-" in e.headers.get("Channel", "") for e in events)
    channels = {e.headers["Channel"] for e in events if e.name == "Hangup"}
    assert len(channels) == 2 and all(c.startswith("Local/101@op-phone-") for c in channels)
    assert any(e.name == "CEL" and e.headers["EventName"] == "LINKEDID_END" for e in events)
    assert all(e.headers["Linkedid"] == "na-1" for e in events if "Linkedid" in e.headers)


async def test_demo_pbx_for_serve_generates_calls_the_bridge_understands(tmp_path: Path) -> None:
    from pbx_bridge.config import SimulatorConfig
    from pbx_bridge.simulator.embedded import start_demo_pbx

    config = SimulatorConfig(port=0, calls_per_second=20.0, operators=["301", "302"])
    simulator, pbx = await start_demo_pbx(config, tmp_path)
    simulator.settings.speed = 20
    queue: asyncio.Queue[QueueItem] = asyncio.Queue()
    conn = PbxConnection(pbx, queue)
    await conn.start()
    try:
        event = await next_item(queue, lambda i: isinstance(i, AmiEvent) and i.name == "Newchannel"
                                and "@operators-" in i.headers["Channel"], within=15)
        assert isinstance(event, AmiEvent)
        found = re.match(pbx.operator_channel, event.headers["Channel"])
        assert found and found.group("ext") in ("301", "302")
        assert pbx.name == "simulator" and pbx.asterisk_version.startswith("22")
        assert simulator.recorder.spool_dir == tmp_path / "simulator-spool"
    finally:
        await conn.stop()
        await simulator.stop()


async def test_overloaded_generator_does_not_starve_the_loop(sim: AmiSimulator) -> None:
    """Asked for far more calls than it can render, the simulator still answers actions."""
    sim.settings.speed = 50
    queue: asyncio.Queue[QueueItem] = asyncio.Queue()
    conn = PbxConnection(pbx_config(sim.port), queue)
    await conn.start()
    try:
        await next_item(queue, lambda i: isinstance(i, ChannelsSnapshot))
        sim.start_generator(100)  # 5000 calls/s wanted: always a backlog
        await asyncio.sleep(1.0)
        started = time.monotonic()
        pong = await conn.send_action({"Action": "Ping"}, timeout=3)
        assert pong.get("Ping") == "Pong" and time.monotonic() - started < 3
        assert conn.events_received > 1000
    finally:
        await conn.stop()
