"""The panoramisk 1.4 pitfalls the connection works around, shown on the stock Manager against
the simulator (so an upgrade that fixes or changes them is noticed), next to PbxConnection doing
the right thing on the same bytes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from panoramisk import Manager

from pbx_bridge.ami.connection import PbxConnection
from pbx_bridge.ami.errors import PbxUnavailable
from pbx_bridge.ami.events import AmiEvent, ChannelsSnapshot
from pbx_bridge.calls.queue import QueueItem
from pbx_bridge.simulator.server import AmiSimulator, SimulatorSettings
from tests.test_connection import next_item, pbx_config, until

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def sim() -> AsyncIterator[AmiSimulator]:
    simulator = AmiSimulator(SimulatorSettings(speed=50, seed=5))
    await simulator.start()
    yield simulator
    await simulator.stop()


def stock_manager(port: int) -> Manager:
    return Manager(loop=asyncio.get_running_loop(), host="127.0.0.1", port=port,
                   username="bridge", secret="simulator", ping_delay=3600, ping_interval=3600,
                   reconnect_timeout=3600)


async def test_pitfall_1_a_raising_handler_loses_the_rest_of_the_chunk(sim: AmiSimulator) -> None:
    seen: list[str] = []

    def handler(_manager: Any, message: Any) -> None:
        seen.append(message["UserEvent"])
        if message["UserEvent"] == "boom":
            raise RuntimeError("a bug in a handler")

    bare = stock_manager(sim.port)
    bare.register_event("UserEvent", handler)
    bare.connect()
    queue: asyncio.Queue[QueueItem] = asyncio.Queue()
    conn = PbxConnection(pbx_config(sim.port), queue)
    await conn.start()
    try:
        await next_item(queue, lambda i: isinstance(i, ChannelsSnapshot))
        await sim.wait_logins(2)
        sim.send_raw(b"Event: UserEvent\r\nUserEvent: boom\r\n\r\n"
                     b"Event: UserEvent\r\nUserEvent: after\r\n\r\n")
        got = [await next_item(queue, lambda i: isinstance(i, AmiEvent) and i.name == "UserEvent")
               for _ in range(2)]
        assert [e.headers["UserEvent"] for e in got if isinstance(e, AmiEvent)] == ["boom", "after"]
        await asyncio.sleep(0.3)
        assert seen == ["boom"]  # "after" was in the same chunk: gone with the connection
        assert len(sim.logged_in) == 1  # the stock manager's connection was closed
    finally:
        bare.close()
        await conn.stop()


async def test_pitfall_5_and_7_originate_answer_and_resend(sim: AmiSimulator) -> None:
    responses: list[str] = []
    bare = stock_manager(sim.port)
    bare.register_event("OriginateResponse", lambda _m, msg: responses.append(msg["Uniqueid"]))
    bare.connect()
    await sim.wait_logins(1)
    await asyncio.sleep(0.1)
    fields = {"Action": "Originate", "Channel": "Local/101@op-phone/n", "Context": "from-internal",
              "Exten": "89161234567", "Priority": "1", "Async": "true", "ChannelId": "p5"}
    result = await asyncio.wait_for(bare.send_action(dict(fields)), 10)
    # Pitfall 5: the action's result is [response, OriginateResponse]; handlers never see it.
    assert [m.get("Event", m.get("Response")) for m in result] == ["Success", "OriginateResponse"]
    assert responses == []

    # Pitfall 7: an action pending when the connection drops is queued to be sent again.
    def swallow(session: Any, action: Any) -> bool:
        if action.name == "Originate":
            session.abort()
            return True
        return False

    sim.action_hook = swallow
    pending = bare.send_action(dict(fields, ChannelId="p7"))
    await until(lambda: len(bare.awaiting_actions) == 1)
    assert not pending.done()  # it would hang forever, then place a second call on FullyBooted
    bare.close()

    # PbxConnection: the same drop fails the Originate at once and never sends it again.
    queue: asyncio.Queue[QueueItem] = asyncio.Queue()
    conn = PbxConnection(pbx_config(sim.port), queue)
    await conn.start()
    try:
        await next_item(queue, lambda i: isinstance(i, ChannelsSnapshot))
        with pytest.raises(PbxUnavailable):
            await conn.originate({k: v for k, v in fields.items() if k != "Action"} | {"ChannelId": "x"})
        await next_item(queue, lambda i: isinstance(i, ChannelsSnapshot))
        assert [a.get("ChannelId") for a in sim.actions if a.name == "Originate"].count("x") == 1
    finally:
        await conn.stop()
