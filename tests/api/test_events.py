"""Live events over a real WebSocket and a real SSE stream: the screen pop for a known and an
unknown caller, operators' filtering, slow clients cut off without slowing the publisher."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any

import aiohttp

from pbx_bridge.calls.changes import CallChange
from pbx_bridge.calls.record import CallRecord
from pbx_bridge.events.messages import make_message
from tests.api.conftest import Api

CARD = {"id": 5, "name": "Ivan Petrov", "company": "Romashka", "phones": ["+74951234567"]}


def _record(**fields: Any) -> CallRecord:
    base: dict[str, Any] = {"pbx": "main", "linkedid": "519141ac", "started_at": 1795730000.0,
                            "direction": "inbound", "customer_number": "+74951234567",
                            "customer_name": "Ivan Petrov", "did": "+74951110000",
                            "operators_rung": ["101"], "id": 1}
    base.update(fields)
    return CallRecord(**base)


async def _next(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    msg = await asyncio.wait_for(ws.receive(), 5)
    assert msg.type == aiohttp.WSMsgType.TEXT, msg
    data: dict[str, Any] = json.loads(msg.data)
    return data


async def _ws(api: Api, role: str, query: str = "") -> aiohttp.ClientWebSocketResponse:
    ws = await api.client.ws_connect(f"/api/v1/events{query}", headers=api.auth(role))
    assert (await _next(ws))["type"] == "ready"
    return ws


async def test_screen_pop_known_and_unknown_caller(api: Api) -> None:
    notifier = api.runtime.services["notifier"]
    op101 = await _ws(api, "operator")
    op102 = await _ws(api, "operator102")
    manager = await _ws(api, "manager")
    # Known caller: the CRM hook has put the card on the change.
    await notifier.on_change(CallChange("ringing", _record(client_id=5), extension="101", client=CARD))
    # Unknown caller: no card.
    unknown = _record(linkedid="x2", customer_number="+79161234567", customer_name=None, id=2)
    await notifier.on_change(CallChange("ringing", unknown, extension="101", client=None))
    for ws in (op101, manager):
        pop = await _next(ws)
        assert pop["type"] == "call.ringing" and pop["extension"] == "101"
        assert pop["client"] == CARD and pop["call"]["customer_number"] == "+74951234567"
        assert pop["call"]["client_id"] == 5
        second = await _next(ws)
        assert second["type"] == "call.ringing" and second["client"] is None
        assert second["call"]["customer_number"] == "+79161234567"
    # 102 was not rung: it gets nothing. A 102 message proves its socket works.
    await notifier.on_change(CallChange("ringing", _record(operators_rung=["102"], id=3), extension="102"))
    assert (await _next(op102))["call"]["id"] == 3
    assert (await _next(manager))["call"]["id"] == 3
    for ws in (op101, op102, manager):
        await ws.close()


async def test_call_lifecycle_messages_and_type_filter(api: Api) -> None:
    notifier = api.runtime.services["notifier"]
    ws = await _ws(api, "manager")
    only_missed = await _ws(api, "manager", "?types=call.missed")
    await notifier.on_change(CallChange("started", _record()))
    await notifier.on_change(CallChange("answered", _record(operator="101", answered_at=1795730002.0),
                                        extension="101"))
    await notifier.on_change(CallChange("ended", _record(status="no_answer", ended_at=1795730004.0)))
    api.runtime.bus.publish(make_message("recording.ready", ["101"], call_id=1, recording={"url": "/r/1"}))
    types = [(await _next(ws))["type"] for _ in range(4)]
    assert types == ["call.answered", "call.ended", "call.missed", "recording.ready"]
    missed = await _next(only_missed)
    assert missed["type"] == "call.missed" and missed["call"]["missed"] is True
    resp = await api.client.get("/api/v1/events?types=call.nope", headers=api.auth("manager"))
    assert resp.status == 422
    await ws.close()
    await only_missed.close()


async def test_sse_stream(api: Api) -> None:
    notifier = api.runtime.services["notifier"]
    url = f"/api/v1/events?access_token={api.tokens['operator']}"
    resp = await api.client.get(url, headers={"Accept": "text/event-stream"})
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")

    async def frame() -> dict[str, Any]:
        while True:
            line = await asyncio.wait_for(resp.content.readline(), 5)
            if line.startswith(b"data: "):
                data: dict[str, Any] = json.loads(line[6:])
                return data

    assert (await frame())["type"] == "ready"
    await notifier.on_change(CallChange("ringing", _record(operators_rung=["102"]), extension="102"))
    await notifier.on_change(CallChange("ringing", _record(), extension="101", client=CARD))
    pop = await frame()
    assert pop["type"] == "call.ringing" and pop["client"] == CARD  # 102's ring was filtered out
    resp.close()
    plain = await api.client.get("/api/v1/events", headers=api.auth("operator"))
    assert plain.status == 406


async def test_slow_websocket_client_is_cut_off_and_never_slows_publishing(api: Api) -> None:
    api.runtime.settings.api.ws_send_timeout = 0.5
    api.runtime.settings.api.event_queue_size = 50
    # A raw client that upgrades, then never reads: its receive buffer fills up.
    host, port = api.client.server.host, api.client.server.port
    internal = api.runtime.bus.subscriber_count  # serve's own listeners (transcription)
    sock = socket.create_connection((host, port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall((f"GET /api/v1/events HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
                  "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                  "Sec-WebSocket-Version: 13\r\n"
                  f"Authorization: Bearer {api.tokens['manager']}\r\n\r\n").encode())
    await asyncio.sleep(0.2)
    assert api.runtime.bus.subscriber_count == internal + 1
    healthy = await _ws(api, "manager")
    big = {"pad": "x" * 20_000}
    took: list[float] = []
    for i in range(400):
        start = time.perf_counter()
        api.runtime.bus.publish(make_message("recording.ready", [], call_id=i, recording=big))
        took.append(time.perf_counter() - start)
        if i % 20 == 0:
            await asyncio.sleep(0.01)
            got = []
            while True:  # the healthy client keeps up
                try:
                    got.append(await asyncio.wait_for(healthy.receive(), 0.5))
                except TimeoutError:
                    break
                if len(got) >= 20 or (i == 0 and got):
                    break
    # Publishing never waited for anyone: every publish but a few (a GC pass or the machine
    # busy elsewhere can stall any line of a test) took under 10 ms.
    assert sorted(took)[-5] < 0.01, sorted(took)[-5:]

    async def slow_gone() -> bool:
        return api.runtime.bus.subscriber_count == internal + 1

    deadline = time.monotonic() + 10
    while not await slow_gone():
        assert time.monotonic() < deadline, "the slow client was not disconnected"
        await asyncio.sleep(0.05)
    sock.close()
    metrics = await api.client.get("/metrics", headers=api.auth("admin"))
    assert "pbx_bridge_live_event_clients_dropped_total 1.0" in await metrics.text()
    await healthy.close()


async def test_frames_of_every_length_arrive_whole_and_in_order(api: Api) -> None:
    """The server writes pre-built frames itself, several in one write when they queue up: a
    real client must get each message whole, in order, across all three length encodings."""
    ws = await _ws(api, "manager")
    sizes = [0, 1, 100, 125, 126, 127, 1000, 65_535, 65_536, 200_000]
    for burst in range(2):  # first one by one, then all queued before the sender runs
        for n, size in enumerate(sizes):
            api.runtime.bus.publish(make_message("recording.ready", [], call_id=n,
                                                 recording={"pad": "я" * size}))
            if burst == 0:
                await asyncio.sleep(0)
        for n, size in enumerate(sizes):
            got = await _next(ws)
            assert got["call_id"] == n and got["recording"]["pad"] == "я" * size
    await ws.close()
