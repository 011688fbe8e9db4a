"""Integration bugs found while wiring `serve`, each with the test that showed it."""

from __future__ import annotations

import asyncio

import pytest

from pbx_bridge.ami.connection import PbxConnection
from pbx_bridge.ami.events import AmiEvent, ChannelsSnapshot
from pbx_bridge.calls.queue import QueueItem
from pbx_bridge.config import PbxConfig
from pbx_bridge.simulator.server import AmiSimulator, SimulatorSettings

pytestmark = pytest.mark.timeout(60)


async def test_a_pipeline_behind_the_wire_is_not_a_dead_pbx() -> None:
    """The queue is full, so the connection stops reading (backpressure): the answer to its Ping
    waits unread behind the backlog. That must not count as a half-open connection (it used to
    drop the session and lose the backlog under load, e.g. `bench_serve`'s 1,000-call blast)."""
    async with AmiSimulator(SimulatorSettings(auth_fail_delay=0.05, seed=7)) as sim:
        queue: asyncio.Queue[QueueItem] = asyncio.Queue(maxsize=3)
        conn = PbxConnection(PbxConfig(name="lab", port=sim.port, secret="simulator",
                                       ping_interval=0.1, ping_timeout=0.2,
                                       reconnect_min=0.05, reconnect_max=0.2), queue)
        await conn.start()
        try:
            while not isinstance(await asyncio.wait_for(queue.get(), 5), ChannelsSnapshot):
                pass
            for n in range(150):
                sim.send_raw(f"Event: UserEvent\r\nUserEvent: n{n}\r\n\r\n".encode())
            seen = []
            while len(seen) < 150:  # a consumer slower than several ping timeouts in all
                item = await asyncio.wait_for(queue.get(), 5)
                if isinstance(item, AmiEvent) and item.name == "UserEvent":
                    seen.append(item.headers["UserEvent"])
                await asyncio.sleep(0.01)
            assert seen == [f"n{n}" for n in range(150)]
            assert conn.logins == 1 and conn.connected
        finally:
            await conn.stop()
