"""End to end through the AMI simulator (issue 3): HTTP -> click-to-call -> PbxConnection ->
simulator over TCP -> events -> call consumer and the click-to-call service -> database and
WebSocket; and the screen pop of an inbound call through the consumer, the CRM hook and the
notifier. Needs the simulator, PbxConnection and the call consumer (and crm_sync for the
screen pop): on a tree without them these tests are skipped."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy.ext.asyncio import AsyncEngine

from pbx_bridge.ami.connection import PbxConnection
from pbx_bridge.ami.events import AmiEvent, QueueItem
from pbx_bridge.auth.tokens import create_token
from pbx_bridge.calls.consumer import CallConsumer, tracker_settings_for
from pbx_bridge.config import PbxConfig, Settings
from pbx_bridge.db.engine import make_sessionmaker
from pbx_bridge.http.app import make_app
from pbx_bridge.runtime import Runtime
from pbx_bridge.simulator.server import AmiSimulator, SimulatorSettings


@dataclass
class Bridge:
    client: TestClient[Any, Any]
    runtime: Runtime
    sim: AmiSimulator
    connection: PbxConnection
    tokens: dict[str, str]

    def auth(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}


async def _forward(source: asyncio.Queue[QueueItem], target: asyncio.Queue[QueueItem],
                   runtime: Runtime) -> None:
    """The wiring serve() is to do: every raw event to click-to-call's on_event, then to the consumer."""
    while True:
        item = await source.get()
        if isinstance(item, AmiEvent):
            await runtime.services["click_to_call"].on_event(item)
        target.put_nowait(item)


@pytest.fixture
async def bridge(settings: Settings, engine: AsyncEngine, aiohttp_client: Any) -> AsyncIterator[Bridge]:
    sim = AmiSimulator(SimulatorSettings(secret="test", speed=10.0, seed=7))
    await sim.start()
    config = PbxConfig(name="main", port=sim.port, secret="test",
                       operator_channel=r"^Local/(?P<ext>1\d\d)@(operators|op-phone)-",
                       inbound_contexts=["from-trunk"], operator_dial_string="Local/{ext}@op-phone/n",
                       outbound_context="from-internal", ping_interval=1.0, ping_timeout=2.0,
                       reconnect_min=0.1, reconnect_max=0.5)
    settings.pbx = [config]
    settings.api.token_cache_seconds = 0.0
    runtime = Runtime(settings=settings, engine=engine, sessions=make_sessionmaker(engine))
    raw: asyncio.Queue[QueueItem] = asyncio.Queue()
    calls: asyncio.Queue[QueueItem] = asyncio.Queue()
    connection = PbxConnection(config, raw)
    runtime.pbx["main"] = connection
    app = make_app(runtime)
    hooks: list[Any] = []
    try:
        from pbx_bridge.clients.hook import CrmHook

        hooks.append(CrmHook(engine, settings, bus=runtime.bus))
    except ImportError:
        pass
    hooks += [runtime.services["click_to_call"], runtime.services["notifier"]]
    consumer = CallConsumer(calls, engine, tracker_settings_for(settings.pbx, settings.phone), hooks)
    tasks = [asyncio.create_task(consumer.run()), asyncio.create_task(_forward(raw, calls, runtime))]
    await connection.start()
    await sim.wait_logins(1)
    for _ in range(100):
        if connection.connected:
            break
        await asyncio.sleep(0.05)
    client = await aiohttp_client(app)
    tokens = {}
    async with engine.begin() as conn:
        for role, ext in (("crm", None), ("operator", "101"), ("manager", None)):
            tokens[role] = (await create_token(conn, name=role, role=role, extension=ext))[1]
    yield Bridge(client, runtime, sim, connection, tokens)
    await runtime.services["click_to_call"].close()
    await connection.stop()
    await consumer.stop()
    for task in tasks[1:]:
        task.cancel()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(tasks[0], 5)
    await sim.stop()


async def _ready(ws: Any) -> None:
    assert json.loads((await asyncio.wait_for(ws.receive(), 5)).data)["type"] == "ready"


async def test_click_to_call_answered_through_the_simulator(bridge: Bridge) -> None:
    ws = await bridge.client.ws_connect("/api/v1/events?types=click_to_call.updated",
                                        headers=bridge.auth("operator"))
    await _ready(ws)
    resp = await bridge.client.post("/api/v1/click-to-call", headers=bridge.auth("crm"),
                                    json={"extension": "101", "number": "8 (903) 555-01-99"})
    assert resp.status == 202, await resp.text()
    request_id = (await resp.json())["id"]
    states = []
    while not states or states[-1] not in ("ended", "failed"):
        msg = json.loads((await asyncio.wait_for(ws.receive(), 10)).data)
        states.append(msg["click_to_call"]["state"])
    assert states == ["dialing_operator", "dialing_customer", "connected", "ended"]
    (originate,) = [a for a in bridge.sim.actions if a.name == "Originate"]
    assert originate.get("Channel") == "Local/101@op-phone/n" and originate.get("Exten") == "89035550199"
    # The call record links back to the request, and the request to the record.
    for _ in range(100):
        body = await (await bridge.client.get("/api/v1/calls", params={"status": "answered"},
                                              headers=bridge.auth("crm"))).json()
        if body["items"]:
            break
        await asyncio.sleep(0.05)
    (call,) = body["items"]
    assert call["click_to_call_id"] == request_id and call["direction"] == "outbound"
    assert call["customer_number"] == "+79035550199"
    final = await (await bridge.client.get(f"/api/v1/click-to-call/{request_id}",
                                           headers=bridge.auth("crm"))).json()
    assert final["state"] == "ended" and final["call_id"] == call["id"]
    await ws.close()


async def test_pbx_down_then_503(bridge: Bridge) -> None:
    await bridge.sim.stop()
    for _ in range(100):
        if not bridge.connection.connected:
            break
        await asyncio.sleep(0.05)
    resp = await bridge.client.post("/api/v1/click-to-call", headers=bridge.auth("crm"),
                                    json={"extension": "101", "number": "+79035550199"})
    assert resp.status == 503 and resp.headers["Retry-After"] == "5"
    ready = await bridge.client.get("/readyz", headers=bridge.auth("manager"))
    assert ready.status == 503


async def test_screen_pop_known_and_unknown_caller(bridge: Bridge) -> None:
    from pbx_bridge.simulator.calls import CallValues

    resp = await bridge.client.post("/api/v1/clients", headers=bridge.auth("crm"),
                                    json={"name": "Ivan Petrov", "phones": ["+7 495 123-45-67"]})
    assert resp.status == 201
    card_id = (await resp.json())["id"]
    ws = await bridge.client.ws_connect("/api/v1/events?types=call.ringing", headers=bridge.auth("operator"))
    await _ready(ws)
    template = bridge.sim.template("inbound_answered")
    for number in ("+74951234567", "+79169998877"):
        bridge.sim.add_call(template, CallValues(customer=number, customer_name="", operators=["101"]))
        pop = json.loads((await asyncio.wait_for(ws.receive(), 10)).data)
        assert pop["type"] == "call.ringing" and pop["extension"] == "101"
        assert pop["call"]["customer_number"] == number
        if number == "+74951234567":
            assert pop["client"] is not None and pop["client"]["id"] == card_id
        else:
            assert pop["client"] is None
        await asyncio.sleep(1.0)  # this call's other events go by before the next one
    await ws.close()
