"""Click-to-call end to end: the whole bridge as `serve` assembles it (HTTP API, embedded
simulator over TCP, PbxConnection, call pipeline, database), driven through the HTTP API.
(tests/api covers the request rules against a scripted AMI peer; here the PBX is the simulator
and the call record comes from the tracker.)"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy.ext.asyncio import AsyncEngine

from pbx_bridge.assembly import Bridge, assemble
from pbx_bridge.auth.tokens import create_token
from pbx_bridge.config import PbxConfig, Settings
from pbx_bridge.simulator.server import OriginateOutcome
from tests.e2e_support import all_calls, free_port, wait_until

NUMBER = "8 (903) 555-01-99"


@asynccontextmanager
async def running(settings: Settings, engine: AsyncEngine,
                  outcomes: dict[str, OriginateOutcome] | None = None,
                  adjust: Callable[[Settings], None] | None = None,
                  ) -> AsyncIterator[tuple[Bridge, aiohttp.ClientSession, str]]:
    settings.server.port = 0
    settings.simulator.port = 0
    settings.simulator.calls_per_second = 0  # only our calls
    settings.recordings.policy = "none"
    settings.transcription.in_process = False  # no recordings, nothing to transcribe
    if adjust is not None:
        adjust(settings)
    bridge = assemble(settings, engine)
    if bridge.simulator_settings is not None:
        bridge.simulator_settings.speed = 8  # the trace's 8 s in 1 s; times still from Timestamp
        bridge.simulator_settings.originate_outcomes = outcomes or {}
    await bridge.start()
    try:
        async with engine.begin() as conn:
            _, token = await create_token(conn, name="crm", role="crm")
            # The operator whose phone rings first: a known extension (issue 18).
            await create_token(conn, name="op101", role="operator", extension="101")
        headers = {"Authorization": f"Bearer {token}"}
        base = f"http://127.0.0.1:{bridge.http_port}"
        async with aiohttp.ClientSession(base, headers=headers) as http:
            yield bridge, http, token
    finally:
        await bridge.stop()


async def _follow(http: aiohttp.ClientSession, request_id: str) -> dict[str, Any]:
    states: list[str] = []
    body: dict[str, Any] = {}

    async def final() -> bool:
        nonlocal body
        async with http.get(f"/api/v1/click-to-call/{request_id}") as r:
            assert r.status == 200
            body = await r.json()
        if not states or states[-1] != body["state"]:
            states.append(body["state"])
        return body["state"] in ("ended", "failed")

    await wait_until(final, 15, "click-to-call request final")
    body["seen"] = states
    return body


async def test_answered_reaches_connected_then_ended_and_the_record_links_it(
        settings: Settings, engine: AsyncEngine) -> None:
    async with running(settings, engine) as (bridge, http, _token):
        await wait_until(lambda: bridge.runtime.pbx["simulator"].connected, 10, "logged in")
        async with http.post("/api/v1/click-to-call", json={"extension": "101", "number": NUMBER}) as r:
            assert r.status == 202, await r.text()
            request_id = (await r.json())["id"]
        final = await _follow(http, request_id)
        assert (final["state"], final["reason"]) == ("ended", None)
        assert final["call_id"] is not None

        async def record_final() -> bool:
            return all(c.ended_at is not None for c in await all_calls(engine))

        # The request ends with the operator's leg; the record with the call's last channel.
        await wait_until(record_final, 10, "the call record is final")
        calls = await all_calls(engine)
        assert [c.id for c in calls] == [final["call_id"]]
        rec = calls[0]
        assert rec.click_to_call_id == request_id
        assert (rec.direction, rec.status, rec.operator) == ("outbound", "answered", "101")
        assert rec.customer_number == "+79035550199" and rec.dialled == "89035550199"
        # The trace's wait and talk: times come from the events, not from the replay speed.
        assert rec.wait_seconds is not None and abs(rec.wait_seconds - 2.0) <= 0.3
        assert rec.talk_seconds is not None and abs(rec.talk_seconds - 6.0) <= 0.3
        # What the simulator was asked for: one Originate, Async, with our ChannelId.
        sim = bridge.simulator
        assert sim is not None
        [originate] = [a for a in sim.actions if a.name == "Originate"]
        assert originate.get("Async") == "true" and originate.get("Exten") == "89035550199"


async def test_operator_does_not_answer(settings: Settings, engine: AsyncEngine) -> None:
    async with running(settings, engine, {"101": "operator_no_answer"}) as (bridge, http, _t):
        await wait_until(lambda: bridge.runtime.pbx["simulator"].connected, 10, "logged in")
        async with http.post("/api/v1/click-to-call", json={"extension": "101", "number": NUMBER}) as r:
            assert r.status == 202, await r.text()
            request_id = (await r.json())["id"]
        final = await _follow(http, request_id)
        assert (final["state"], final["reason"]) == ("failed", "operator_no_answer")
        assert "connected" not in final["seen"]
        sim = bridge.simulator
        assert sim is not None
        await wait_until(lambda: sim.live_channels() == [], 10, "every channel hung up")

        async def records_final() -> bool:
            return all(c.ended_at is not None for c in await all_calls(engine))

        await wait_until(records_final, 10, "the pipeline saw the last Hangup")
        # Whatever the pipeline recorded of it, it is no answered customer call.
        for rec in await all_calls(engine):
            assert rec.status != "answered" and rec.ended_at is not None


async def test_customer_busy(settings: Settings, engine: AsyncEngine) -> None:
    async with running(settings, engine, {"89035550199": "customer_busy"}) as (bridge, http, _t):
        await wait_until(lambda: bridge.runtime.pbx["simulator"].connected, 10, "logged in")
        async with http.post("/api/v1/click-to-call", json={"extension": "101", "number": NUMBER}) as r:
            assert r.status == 202, await r.text()
            request_id = (await r.json())["id"]
        final = await _follow(http, request_id)
        assert (final["state"], final["reason"]) == ("failed", "customer_busy")
        assert "connected" not in final["seen"]
        sim = bridge.simulator
        assert sim is not None
        await wait_until(lambda: sim.live_channels() == [], 10, "every channel hung up")

        async def recorded() -> bool:
            calls = await all_calls(engine)
            return len(calls) == 1 and calls[0].ended_at is not None

        await wait_until(recorded, 10, "the call record")
        [rec] = await all_calls(engine)
        assert rec.click_to_call_id == request_id and rec.status == "busy"
        assert rec.direction == "outbound" and rec.customer_number == "+79035550199"


async def test_pbx_down_is_503_and_readyz_says_why(settings: Settings, engine: AsyncEngine,
                                                   tmp_path: Path) -> None:
    def unreachable(s: Settings) -> None:
        s.pbx = [PbxConfig(name="main", port=free_port(), secret="x", reconnect_min=0.05,
                           reconnect_max=0.2)]
        s.click_to_call.retry_after = 7

    async with running(settings, engine, adjust=unreachable) as (bridge, http, _t):
        assert bridge.simulator is None  # a [[pbx]] is configured: no simulator
        async with http.post("/api/v1/click-to-call", json={"extension": "101", "number": NUMBER}) as r:
            assert r.status == 503
            assert r.headers["Retry-After"] == "7"
            assert (await r.json())["error"]["code"] == "pbx_unavailable"
        async with engine.begin() as conn:
            _, manager = await create_token(conn, name="ops", role="manager")
        async with http.get("/readyz", headers={"Authorization": f"Bearer {manager}"}) as r:
            assert r.status == 503
            checks = (await r.json())["checks"]
            assert checks["database"] == "ok" and checks["pbx:main"] != "ok"
