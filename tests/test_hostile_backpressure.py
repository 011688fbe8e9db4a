"""Found by the soak (bench/bench_soak.py, phase load): when the call pipeline falls behind, the
bounded queue fills and PbxConnection pauses reading (TCP backpressure). The keepalive's Ping
answer then waits behind bytes the bridge itself is not reading, and the watchdog took that for
a half-open connection: it dropped a healthy connection every few seconds, and each reconnect
lost the events in between. A connection that is delivering data, or that we paused, is alive.
(The half-open case the watchdog exists for: tests/test_connection.py::
test_keepalive_detects_half_open_connection_and_reconnects.)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from pbx_bridge.ami.connection import PbxConnection
from pbx_bridge.ami.events import AmiEvent, ChannelsSnapshot
from pbx_bridge.calls.queue import QueueItem
from pbx_bridge.config import PbxConfig
from pbx_bridge.simulator.server import AmiSimulator, ReceivedAction, Session, SimulatorSettings

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def sim() -> AsyncIterator[AmiSimulator]:
    simulator = AmiSimulator(SimulatorSettings(seed=5))
    await simulator.start()
    yield simulator
    await simulator.stop()


def config(port: int) -> PbxConfig:
    return PbxConfig(name="lab", host="127.0.0.1", port=port, username="bridge",
                     secret="simulator", ping_interval=0.1, ping_timeout=0.2,
                     reconnect_min=0.05, reconnect_max=0.2)


async def test_a_stalled_consumer_does_not_make_the_watchdog_drop_the_connection(
        sim: AmiSimulator) -> None:
    queue: asyncio.Queue[QueueItem] = asyncio.Queue(maxsize=5)
    conn = PbxConnection(config(sim.port), queue)
    await conn.start()
    try:
        while not isinstance(await asyncio.wait_for(queue.get(), 5), ChannelsSnapshot):
            pass
        count = 20_000  # far more than the socket buffers hold: reading must pause
        for n in range(count):
            sim.send_raw(f"Event: UserEvent\r\nUserEvent: n{n}\r\n\r\n".encode())
        await asyncio.sleep(1.5)  # the consumer stalls for many ping intervals
        assert conn.logins == 1, "the watchdog dropped a connection we had paused ourselves"
        seen: list[str] = []
        while len(seen) < count:
            item = await asyncio.wait_for(queue.get(), 5)
            if isinstance(item, AmiEvent) and item.name == "UserEvent":
                seen.append(item.headers["UserEvent"])
        assert seen == [f"n{n}" for n in range(count)]
        assert conn.logins == 1
    finally:
        await conn.stop()




async def test_a_reconnect_while_the_pipeline_is_behind_completes_its_session_setup(
        sim: AmiSimulator) -> None:
    """After a (re)login the PBX may stream events before it answers the session's own actions;
    with the pipeline behind, the answer to `Events` waits behind events we are not reading yet.
    It used to time out and drop the fresh connection, over and over (seen in the soak). Here the
    simulator answers `Events` only after a burst, while the consumer is stalled past the
    answer timeout: the session still comes up once."""
    queue: asyncio.Queue[QueueItem] = asyncio.Queue(maxsize=5)
    conn = PbxConnection(config(sim.port), queue)
    held: list[tuple[Session, ReceivedAction]] = []

    def hold_second_events(session: Session, action: ReceivedAction) -> bool:
        if action.name == "Events" and sim._logins >= 2 and not held:
            held.append((session, action))
            return True  # answered below, behind a burst of events
        return False

    go = asyncio.Event()
    go.set()
    snapshots = 0

    async def consumer() -> None:
        nonlocal snapshots
        while True:
            await go.wait()
            item = await queue.get()
            snapshots += isinstance(item, ChannelsSnapshot)

    consuming = asyncio.create_task(consumer())
    await conn.start()
    try:
        for _ in range(200):
            if conn.state == "connected" and snapshots == 1:
                break
            await asyncio.sleep(0.02)
        assert conn.logins == 1
        sim.action_hook = hold_second_events
        sim.drop_clients()
        await sim.wait_logins(2, timeout=10)
        for _ in range(100):
            if held:
                break
            await asyncio.sleep(0.02)
        assert held, "the bridge did not send Events after its login"
        go.clear()  # the pipeline stalls
        for n in range(20_000):
            sim.send_raw(f"Event: UserEvent\r\nUserEvent: b{n}\r\n\r\n".encode())
        sim.action_hook = None
        await sim._dispatch(*held[0])  # the answer, behind the burst
        await asyncio.sleep(3.0)  # longer than the answer timeout (2 s)
        go.set()
        for _ in range(200):
            if conn.state == "connected" and snapshots == 2 and not queue.qsize():
                break
            await asyncio.sleep(0.05)
        assert sim._logins == 2 and conn.logins == 2, (sim._logins, conn.logins)
        assert snapshots == 2 and conn.state == "connected"
    finally:
        consuming.cancel()
        await conn.stop()
