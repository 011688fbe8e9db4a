"""Click-to-call over real HTTP against the bridge as `serve` assembles it: the Originate read off
the simulated Asterisk's socket, and the call's events (the real click_to_call trace with the
request's ids, or its no-answer and busy outcomes) coming back over it."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from typing import Any

import sqlalchemy as sa

from pbx_bridge.assembly import assemble
from pbx_bridge.click_to_call.schema import click_to_call_requests
from pbx_bridge.click_to_call.service import ClickToCallService
from tests.api.conftest import Api, ApiFactory, wait_for, wait_until

BODY = {"extension": "101", "number": "8 (903) 555-01-99"}


async def _states(api: Api, request_id: str) -> str:
    resp = await api.client.get(f"/api/v1/click-to-call/{request_id}", headers=api.auth("crm"))
    assert resp.status == 200
    return str((await resp.json())["state"])


async def _rows(api: Api) -> int:
    async with api.runtime.engine.connect() as conn:
        query = sa.select(sa.func.count()).select_from(click_to_call_requests)
        return int((await conn.execute(query)).scalar_one())


async def _follow(api: Api, request_id: str) -> dict[str, Any]:
    async def final() -> bool:
        return await _states(api, request_id) in ("ended", "failed")

    await wait_for(final)
    resp = await api.client.get(f"/api/v1/click-to-call/{request_id}", headers=api.auth("crm"))
    return dict(await resp.json())


async def test_answered_call_follows_the_trace_to_ended(make_api: ApiFactory) -> None:
    api = await make_api()
    ws = await api.client.ws_connect("/api/v1/events?types=click_to_call.updated",
                                     headers=api.auth("operator"))
    assert json.loads((await ws.receive()).data)["type"] == "ready"
    resp = await api.client.post("/api/v1/click-to-call", json={**BODY, "client_id": 7},
                                 headers=api.auth("crm"))
    assert resp.status == 202, await resp.text()
    body = await resp.json()
    assert body["number"] == "+79035550199" and body["dial"] == "89035550199"
    assert body["state"] in ("queued", "dialing_operator", "dialing_customer")
    final = await _follow(api, body["id"])
    assert final["state"] == "ended" and final["reason"] is None and final["client_id"] == 7

    # The Originate as in the trace, read off the AMI socket.
    (originate,) = api.originates()
    assert originate["Channel"] == "Local/101@op-phone/n"
    assert originate["Context"] == "from-internal"
    assert originate["Exten"] == "89035550199"
    assert originate["Priority"] == "1"
    assert originate["CallerID"] == "<101>"
    assert originate["Async"] == "true"
    uuid.UUID(originate["ChannelId"])
    assert originate["Variable"] == [f"__CALL_ID={body['id']}"]

    # The operator (extension 101) saw every step live.
    seen = []
    while len(seen) < 4:
        msg = json.loads((await asyncio.wait_for(ws.receive(), 5)).data)
        assert msg["type"] == "click_to_call.updated" and msg["extensions"] == ["101"]
        seen.append(msg["click_to_call"]["state"])
    assert seen == ["dialing_operator", "dialing_customer", "connected", "ended"]
    await ws.close()


async def test_operator_does_not_answer(make_api: ApiFactory) -> None:
    api = await make_api(outcome="operator_no_answer")
    resp = await api.client.post("/api/v1/click-to-call", json=BODY, headers=api.auth("crm"))
    assert resp.status == 202
    final = await _follow(api, (await resp.json())["id"])
    assert (final["state"], final["reason"]) == ("failed", "operator_no_answer")


async def test_customer_busy(make_api: ApiFactory) -> None:
    api = await make_api(outcome="customer_busy")
    resp = await api.client.post("/api/v1/click-to-call", json=BODY, headers=api.auth("crm"))
    assert resp.status == 202
    final = await _follow(api, (await resp.json())["id"])
    assert (final["state"], final["reason"]) == ("failed", "customer_busy")


async def test_pbx_down_is_503_with_retry_after_and_nothing_sent(make_api: ApiFactory) -> None:
    api = await make_api(pbx_up=False, retry_after=7)
    resp = await api.client.post("/api/v1/click-to-call", json=BODY, headers=api.auth("crm"))
    assert resp.status == 503
    assert resp.headers["Retry-After"] == "7"
    assert (await resp.json())["error"]["code"] == "pbx_unavailable"
    assert api.originates() == [] and await _rows(api) == 0


async def test_pbx_lost_after_connecting_is_503(make_api: ApiFactory) -> None:
    api = await make_api()
    await api.sim.stop()
    await wait_until(lambda: not api.connection.connected)
    resp = await api.client.post("/api/v1/click-to-call", json={**BODY, "idempotency_key": "k1"},
                                 headers=api.auth("crm"))
    assert resp.status == 503 and int(resp.headers["Retry-After"]) >= 1


async def test_originate_refused_by_the_pbx_fails_the_request(make_api: ApiFactory) -> None:
    api = await make_api(unknown_extensions=frozenset({"89035550199"}))
    resp = await api.client.post("/api/v1/click-to-call", json=BODY, headers=api.auth("crm"))
    assert resp.status == 202
    final = await _follow(api, (await resp.json())["id"])
    assert (final["state"], final["reason"]) == ("failed", "originate_rejected")


async def test_invalid_input_is_rejected_and_nothing_is_called(api: Api) -> None:
    cases: list[tuple[Any, int, str]] = [
        ({"extension": "101", "number": "12"}, 422, "invalid_number"),
        ({"extension": "101", "number": "not a phone"}, 422, "invalid_number"),
        ({"extension": "101", "number": "+7 999"}, 422, "invalid_number"),
        ({"extension": "101", "number": ""}, 422, "invalid_field"),
        ({"extension": "abc", "number": "+7 916 5550101"}, 422, "unknown_extension"),
        ({"extension": "1234567", "number": "+7 916 5550101"}, 422, "unknown_extension"),
        ({"number": "+7 916 5550101"}, 422, "invalid_field"),
        ({"extension": "101", "number": ["+7 916 5550101"]}, 422, "invalid_field"),
        ({"extension": "101", "number": "+79165550101", "client_id": "x"}, 422, "invalid_field"),
        # PostgreSQL cannot store NUL; a lone surrogate half is not text at all.
        ({"extension": "101", "number": "+79165550101", "idempotency_key": "a\u0000b"}, 422, "invalid_field"),
        ({"extension": "101", "number": "+79165550101", "idempotency_key": "a\ud800"}, 422, "invalid_field"),
        ([1, 2], 400, "bad_request"),
    ]
    for body, status, code in cases:
        resp = await api.client.post("/api/v1/click-to-call", json=body, headers=api.auth("crm"))
        assert resp.status == status, (body, await resp.text())
        error = (await resp.json())["error"]
        assert error["code"] == code and error["message"], body
    resp = await api.client.post("/api/v1/click-to-call", data=b"{not json",
                                 headers={**api.auth("crm"), "Content-Type": "application/json"})
    assert resp.status == 400
    assert api.originates() == [] and await _rows(api) == 0


async def test_unknown_extension_when_extensions_are_configured(make_api: ApiFactory) -> None:
    api = await make_api(extensions=["101", "102"])
    resp = await api.client.post("/api/v1/click-to-call", json={"extension": "105", "number": "+79165550101"},
                                 headers=api.auth("crm"))
    assert resp.status == 422 and (await resp.json())["error"]["code"] == "unknown_extension"
    assert api.originates() == []


async def test_human_formats_reach_the_same_number(api: Api) -> None:
    for i, number in enumerate(["8 (916) 555-01-01", "+7 916 5550101", "79165550101", "8-916-555-0101"]):
        resp = await api.client.post("/api/v1/click-to-call", json={"extension": "101", "number": number},
                                     headers=api.auth("admin" if i % 2 else "crm"))
        assert resp.status == 202, await resp.text()
        assert (await resp.json())["number"] == "+79165550101"
    assert {a["Exten"] for a in api.originates()} == {"89165550101"}


async def test_operator_only_from_own_extension(api: Api) -> None:
    resp = await api.client.post("/api/v1/click-to-call", json={"extension": "102", "number": "+79165550101"},
                                 headers=api.auth("operator"))
    assert resp.status == 403
    resp = await api.client.post("/api/v1/click-to-call", json={"extension": "101", "number": "+79165550101"},
                                 headers=api.auth("operator"))
    assert resp.status == 202
    request_id = (await resp.json())["id"]
    # Another operator cannot see it; the owner and the CRM can.
    resp = await api.client.get(f"/api/v1/click-to-call/{request_id}", headers=api.auth("operator102"))
    assert resp.status == 404
    resp = await api.client.get(f"/api/v1/click-to-call/{request_id}", headers=api.auth("operator"))
    assert resp.status == 200
    resp = await api.client.get("/api/v1/click-to-call/no-such-id", headers=api.auth("crm"))
    assert resp.status == 404 and (await resp.json())["error"]["code"] == "not_found"


async def test_same_idempotency_key_is_the_same_request(api: Api) -> None:
    body = {**BODY, "idempotency_key": "crm-task-42"}
    first = await api.client.post("/api/v1/click-to-call", json=body, headers=api.auth("crm"))
    second = await api.client.post("/api/v1/click-to-call", json=body, headers=api.auth("crm"))
    assert first.status == 202 and second.status == 200
    assert (await first.json())["id"] == (await second.json())["id"]
    # The header form is the same key.
    third = await api.client.post("/api/v1/click-to-call", json=BODY,
                                  headers={**api.auth("crm"), "Idempotency-Key": "crm-task-42"})
    assert (await third.json())["id"] == (await first.json())["id"]
    # Concurrent repeats of a new key: one request, one call.
    body2 = {**BODY, "idempotency_key": "crm-task-43"}
    answers = await asyncio.gather(*[
        api.client.post("/api/v1/click-to-call", json=body2, headers=api.auth("crm")) for _ in range(5)])
    ids = {(await r.json())["id"] for r in answers}
    assert len(ids) == 1 and sorted(r.status for r in answers) == [200, 200, 200, 200, 202]
    await asyncio.sleep(0.1)
    assert len(api.originates()) == 2 and await _rows(api) == 2
    # The same key for a different call is refused, not silently merged.
    other = await api.client.post("/api/v1/click-to-call", json={**body, "number": "+79165550101"},
                                  headers=api.auth("crm"))
    assert other.status == 409
    # Keys are per token: another token's same key is its own request.
    mine = await api.client.post("/api/v1/click-to-call", json=body, headers=api.auth("admin"))
    assert mine.status == 202 and (await mine.json())["id"] != (await first.json())["id"]


async def test_rate_limit_per_token(make_api: ApiFactory) -> None:
    api = await make_api(burst=3, rate_per_minute=6)
    statuses = []
    for _ in range(4):
        resp = await api.client.post("/api/v1/click-to-call", json=BODY, headers=api.auth("crm"))
        statuses.append(resp.status)
    assert statuses == [202, 202, 202, 429]
    assert 1 <= int(resp.headers["Retry-After"]) <= 10
    assert (await resp.json())["error"]["code"] == "rate_limited"
    other = await api.client.post("/api/v1/click-to-call", json=BODY, headers=api.auth("admin"))
    assert other.status == 202
    assert len(api.originates()) == 4


async def test_unfinished_requests_are_followed_after_a_restart(make_api: ApiFactory) -> None:
    """The bridge stops right after sending the Originate (its AMI session hears nothing more);
    the next bridge picks the request up from the database and follows the call to its end."""
    api = await make_api(speed=1.0)
    frozen: list[bool] = []

    def freeze_after_originate(session: Any, action: Any) -> bool:
        if action.name == "Originate" and not frozen:
            frozen.append(True)
            asyncio.get_running_loop().call_soon(api.sim.freeze_clients)  # after the answer
        return False

    api.sim.action_hook = freeze_after_originate
    resp = await api.client.post("/api/v1/click-to-call", json=BODY, headers=api.auth("crm"))
    request_id = (await resp.json())["id"]
    assert resp.status == 202 and frozen
    await asyncio.sleep(0.2)
    assert await _states(api, request_id) == "dialing_operator"  # no event reached it
    await api.bridge.stop()
    # A new bridge on the same database and PBX.
    fresh = assemble(dataclasses.replace(api.runtime.settings, pbx=list(api.runtime.settings.pbx)),
                     api.runtime.engine)
    await fresh.start()
    try:
        service: ClickToCallService = fresh.runtime.services["click_to_call"]

        async def ended() -> bool:
            item = await service.get(request_id)
            return item is not None and item.state == "ended"

        await wait_for(ended, within=30)
    finally:
        await fresh.stop()


async def test_requests_never_reported_back_expire(make_api: ApiFactory) -> None:
    """No events at all (the PBX connection lost right after the Originate): the request fails
    once no ringing can still be going on, instead of staying "dialing" forever."""
    from datetime import UTC, datetime, timedelta

    api = await make_api(originate_timeout=30.0)
    # The PBX takes the Originate, then its AMI session goes silent (half-open): no event comes.
    api.sim.action_hook = lambda _session, action: bool(
        action.name == "Originate" and asyncio.get_running_loop().call_soon(api.sim.freeze_clients)
        and False)
    resp = await api.client.post("/api/v1/click-to-call", json=BODY, headers=api.auth("crm"))
    request_id = (await resp.json())["id"]
    assert await _states(api, request_id) == "dialing_operator"
    assert await api.c2c.expire_stale(datetime.now(UTC) + timedelta(seconds=60)) == 0
    assert await api.c2c.expire_stale(datetime.now(UTC) + timedelta(seconds=91)) == 1
    final = await _follow(api, request_id)
    assert (final["state"], final["reason"]) == ("failed", "operator_no_answer")
