"""Kommo end to end: the bridge as `serve` assembles it, the shared traces replayed by the
embedded simulator over TCP, and a Kommo contract server (tests/contract_kommo.py) enforcing the
documented API v4. What the account receives is compared field by field."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from pbx_bridge.auth.tokens import create_token
from pbx_bridge.calls.record import CallRecord
from pbx_bridge.config import KommoConfig, Settings
from tests import crm_connector_support as support
from tests.contract_kommo import KommoContract
from tests.e2e_support import all_calls, wait_until

USERS = {"101": 5001, "102": 5002, "103": 5003}


@pytest.fixture
async def account() -> AsyncIterator[KommoContract]:
    contract = KommoContract()
    await contract.start()
    yield contract
    await contract.stop()


def kommo(settings: Settings, contract: KommoContract, *, transcribe: bool = False) -> None:
    support.configure(settings, transcribe=transcribe)
    settings.crm.kommo = KommoConfig(
        enabled=True, base_url=contract.url, client_id=contract.client_id,
        client_secret=contract.client_secret, redirect_uri=contract.redirect_uri,
        authorization_code=contract.authorization_code(), users=dict(USERS), attach_wait_minutes=10.0)
    settings.crm.external_lookup_timeout = 2.0  # the screen pop's look-up, on a busy test machine


def posts(account: KommoContract) -> list[tuple[str, Any]]:
    return [(path, body) for method, path, body in account.api_log() if method == "POST"]


def call_body(record: CallRecord, *, status: int, result: str, duration: int, user: int) -> dict[str, Any]:
    return {"direction": record.direction, "uniq": str(record.id), "duration": duration,
            "source": "pbx-bridge", "phone": record.customer_number, "call_status": status,
            "call_result": result, "created_at": int(record.started_at), "responsible_user_id": user,
            "created_by": user}


def unsorted_body(record: CallRecord, *, duration: int, user: int | None, ours: str,
                  inbound: bool) -> dict[str, Any]:
    contact: dict[str, Any] = {"name": record.customer_name or record.customer_number,
                               "custom_fields_values": [{"field_code": "PHONE", "values": [
                                   {"value": record.customer_number, "enum_code": "WORK"}]}]}
    if user is not None:
        contact["responsible_user_id"] = user
    return {"source_uid": str(record.id), "source_name": "pbx-bridge", "created_at": int(record.started_at),
            "metadata": {"is_call_event_needed": True, "uniq": str(record.id), "duration": duration,
                         "service_code": "pbx-bridge",
                         "phone": ours if inbound else record.customer_number,
                         "called_at": int(record.started_at),
                         "from": record.customer_number if inbound else ours},
            "_embedded": {"contacts": [contact]}}


async def test_traces_through_serve_give_calls_and_incoming_leads_field_by_field(
        settings: Settings, engine: AsyncEngine, traces: Path, account: KommoContract) -> None:
    kommo(settings, account)
    known = account.add_contact("Ivan Petrov", "+7 495 123-45-67",
                                leads=[{"id": 31, "name": "Order #31", "price": 5000, "status_id": 142}])
    async with support.running(settings, engine) as bridge:
        pops = bridge.runtime.bus.subscribe(lambda m: m.get("type") == "call.ringing")
        # A caller Kommo knows: the screen pop shows the contact and its deal; the call lands on
        # the card with its recording's link (which plays without a token).
        answered = await support.replay(bridge, traces / "inbound_answered_recorded.ami", speed=2)
        await support.delivered_everything(engine)
        pop = await asyncio.wait_for(pops.get(), 5)
        assert pop is not None and pop["client"]["name"] == "Ivan Petrov"
        assert pop["client"]["responsible"] == "101"
        assert pop["client"]["external"] == {"contact_id": known["id"], "leads": [
            {"id": 31, "name": "Order #31", "price": 5000, "status_id": 142}]}
        [(path, [body])] = posts(account)
        link = body.pop("link")
        assert path == "/api/v4/calls"
        assert body == call_body(answered, status=4, result="answered", duration=4, user=5001)
        assert re.fullmatch(rf"{settings.server.public_url}/api/v1/recordings/signed/{answered.id}\."
                            r"\d+\.[A-Za-z0-9_-]{43}", link), link
        async with aiohttp.ClientSession() as http, http.get(link) as r:
            assert r.status == 200 and r.headers["Content-Type"] == "audio/wav"
        # New callers: incoming leads, by the new-contact policy (inbound "every": also missed).
        expected = []
        for name in ("inbound_noanswer", "inbound_busy"):
            record = await support.replay(bridge, traces / f"{name}.ami", speed=4)
            await support.delivered_everything(engine)
            expected.append(("/api/v4/leads/unsorted/sip", [unsorted_body(
                record, duration=0, user=int(USERS[record.operators_rung[-1]]), ours=record.did or "",
                inbound=True)]))
            assert posts(account)[1:] == expected, name
        # Outbound to an unknown number, answered ("answered" policy): an incoming lead too.
        outbound = await support.replay(bridge, traces / "outbound_answered.ami", speed=2)
        await support.delivered_everything(engine)
        [(path, [lead])] = posts(account)[3:]
        lead["metadata"].pop("link")
        assert (path, lead) == ("/api/v4/leads/unsorted/sip", unsorted_body(
            outbound, duration=6, user=5001, ours="101", inbound=False))
        # Every look-up is by the number's last 10 digits.
        queries = [p for m, p, _ in account.api_log() if m == "GET"]
        assert all(re.fullmatch(r"/api/v4/contacts\?query=\d{10}&with=leads", q) for q in queries), queries
        assert await support.dead(engine) == [] and account.limited == 0


async def test_click_to_call_from_kommo(settings: Settings, engine: AsyncEngine, traces: Path,
                                        account: KommoContract) -> None:
    kommo(settings, account)
    settings.recordings.policy = "none"
    account.add_contact("Olga", "+79035550199")
    async with support.running(settings, engine) as bridge:
        async with engine.begin() as conn:
            _, token = await create_token(conn, name="kommo widget", role="crm")
        base = f"http://127.0.0.1:{bridge.http_port}"
        async with aiohttp.ClientSession(base, headers={"Authorization": f"Bearer {token}"}) as http:
            async with http.post("/api/v1/crm/kommo/click-to-call",
                                 json={"user_id": 5001, "phone": "8 903 555-01-99"}) as r:
                assert r.status == 202, await r.text()
                request = await r.json()
            assert request["extension"] == "101" and request["number"] == "+79035550199"
            # A Kommo user without an extension, a missing phone: clear errors, nothing placed.
            async with http.post("/api/v1/crm/kommo/click-to-call",
                                 json={"user_id": 999, "phone": "89035550199"}) as r:
                assert r.status == 422 and (await r.json())["error"]["code"] == "unknown_user"
            async with http.post("/api/v1/crm/kommo/click-to-call", json={"user_id": 5001}) as r:
                assert r.status == 422
        placed = await support.ended_call(engine, lambda c: c.click_to_call_id == request["id"])
        await support.delivered_everything(engine)
        [(path, [body])] = posts(account)
        assert path == "/api/v4/calls"
        assert body == call_body(placed, status=4, result="answered",
                                 duration=round(placed.talk_seconds or 0), user=5001)
        assert len(await all_calls(engine)) == 1


async def test_expired_token_is_refreshed_and_a_refresh_token_gone_stops_without_a_loop(
        settings: Settings, engine: AsyncEngine, traces: Path, account: KommoContract) -> None:
    kommo(settings, account)
    async with support.running(settings, engine) as bridge:
        connector = bridge.crm.connector
        assert connector is not None
        await support.replay(bridge, traces / "inbound_busy.ami", speed=4)
        await support.delivered_everything(engine)
        account.expire_access_tokens()  # 401 -> refresh -> repeat
        await support.replay(bridge, traces / "inbound_noanswer.ami", speed=4)
        await support.delivered_everything(engine)
        grants = [(e.body["grant_type"], e.status) for e in account.log if e.path == "/oauth2/access_token"]
        assert grants == [("authorization_code", 200), ("refresh_token", 200)]
        assert len(account.unsorted) == 2 and connector.state.state == "ok"
        # The refresh token gone: one refused refresh, a clear state, nothing lost, no loop.
        account.expire_access_tokens()
        account.revoke_refresh_tokens()
        await support.replay(bridge, traces / "outbound_answered.ami", speed=4)
        await wait_until(lambda: connector.state.state == "stopped", 10, "the connector stops")
        assert "refresh token refused" in connector.state.detail
        seen = len(account.log)
        await asyncio.sleep(3)
        assert len(account.log) == seen
        grants = [(e.body["grant_type"], e.status) for e in account.log if e.path == "/oauth2/access_token"]
        assert grants[-1] == ("refresh_token", 400) and len(grants) == 3
        assert await support.pending(engine) == 1 and await support.dead(engine) == []
