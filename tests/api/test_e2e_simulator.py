"""End to end through the bridge as `serve` assembles it and the simulated Asterisk over TCP:
HTTP -> click-to-call -> PbxConnection -> simulator -> events -> call pipeline and click-to-call
-> database and WebSocket; and the screen pop of an inbound call through the pipeline, the CRM
hook and the notifier."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from tests.api.conftest import Api, wait_until


async def _ready(ws: Any) -> None:
    assert json.loads((await asyncio.wait_for(ws.receive(), 5)).data)["type"] == "ready"


async def test_click_to_call_answered_through_the_simulator(api: Api) -> None:
    ws = await api.client.ws_connect("/api/v1/events?types=click_to_call.updated",
                                     headers=api.auth("operator"))
    await _ready(ws)
    resp = await api.client.post("/api/v1/click-to-call", headers=api.auth("crm"),
                                 json={"extension": "101", "number": "8 (903) 555-01-99"})
    assert resp.status == 202, await resp.text()
    request_id = (await resp.json())["id"]
    states = []
    while not states or states[-1] not in ("ended", "failed"):
        msg = json.loads((await asyncio.wait_for(ws.receive(), 10)).data)
        states.append(msg["click_to_call"]["state"])
    assert states == ["dialing_operator", "dialing_customer", "connected", "ended"]
    (originate,) = [a for a in api.sim.actions if a.name == "Originate"]
    assert originate.get("Channel") == "Local/101@op-phone/n" and originate.get("Exten") == "89035550199"
    # The call record links back to the request, and the request to the record.
    for _ in range(100):
        body = await (await api.client.get("/api/v1/calls", params={"status": "answered"},
                                              headers=api.auth("crm"))).json()
        if body["items"]:
            break
        await asyncio.sleep(0.05)
    (call,) = body["items"]
    assert call["click_to_call_id"] == request_id and call["direction"] == "outbound"
    assert call["customer_number"] == "+79035550199"
    final = await (await api.client.get(f"/api/v1/click-to-call/{request_id}",
                                           headers=api.auth("crm"))).json()
    assert final["state"] == "ended" and final["call_id"] == call["id"]
    await ws.close()


async def test_pbx_down_then_503(api: Api) -> None:
    await api.sim.stop()
    await wait_until(lambda: not api.connection.connected)
    resp = await api.client.post("/api/v1/click-to-call", headers=api.auth("crm"),
                                    json={"extension": "101", "number": "+79035550199"})
    assert resp.status == 503 and resp.headers["Retry-After"] == "5"
    ready = await api.client.get("/readyz", headers=api.auth("manager"))
    assert ready.status == 503


async def test_screen_pop_known_and_unknown_caller(api: Api) -> None:
    from pbx_bridge.simulator.calls import CallValues

    resp = await api.client.post("/api/v1/clients", headers=api.auth("crm"),
                                    json={"name": "Ivan Petrov", "phones": ["+7 495 123-45-67"]})
    assert resp.status == 201
    card_id = (await resp.json())["id"]
    ws = await api.client.ws_connect("/api/v1/events?types=call.ringing", headers=api.auth("operator"))
    await _ready(ws)
    template = api.sim.template("inbound_answered")
    for number in ("+74951234567", "+79169998877"):
        api.sim.add_call(template, CallValues(customer=number, customer_name="", operators=["101"]))
        pop = json.loads((await asyncio.wait_for(ws.receive(), 10)).data)
        assert pop["type"] == "call.ringing" and pop["extension"] == "101"
        assert pop["call"]["customer_number"] == number
        if number == "+74951234567":
            assert pop["client"] is not None and pop["client"]["id"] == card_id
        else:
            assert pop["client"] is None
        await asyncio.sleep(1.0)  # this call's other events go by before the next one
    await ws.close()
