"""The Kommo contract server refuses what the API v4 documentation refuses, and the client keeps
under 7 requests a second (and learns from a 429 when another client shares the account)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from crm_sync.kommo.api import KommoClient, KommoSettings
from crm_sync.pacing import WindowPacer
from tests.contract_kommo import KommoContract


@pytest.fixture
async def account() -> AsyncIterator[KommoContract]:
    contract = KommoContract(per_second=1000)
    await contract.start()
    yield contract
    await contract.stop()


async def post(account: KommoContract, path: str, body: Any, token: str | None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as http, http.post(account.url + path, json=body,
                                                          headers=headers) as resp:
        return resp.status, await resp.json(content_type=None)


async def test_documented_refusals(account: KommoContract) -> None:
    token = account._issue()["access_token"]
    call = {"direction": "inbound", "duration": 5, "source": "pbx-bridge", "phone": "+74951234567"}
    status, body = await post(account, "/api/v4/calls", [call], None)
    assert (status, body["title"], body["status"]) == (401, "Unauthorized", 401)
    cases = [
        ({k: v for k, v in call.items() if k != "duration"}, "duration", "NotBlank"),
        ({**call, "duration": "5"}, "duration", "InvalidType"),
        ({**call, "direction": "in"}, "direction", "NotSupportedChoice"),
        ({**call, "call_status": 9}, "call_status", "NotSupportedChoice"),
        ({**call, "responsible_user_id": 42}, "responsible_user_id", "NotSupportedChoice"),
        ({**call, "recording": "x"}, "recording", "NotSupportedChoice"),
    ]
    for item, path, code in cases:
        status, body = await post(account, "/api/v4/calls", [item], token)
        assert status == 400 and body["detail"] == "Request validation failed", item
        [problem] = body["validation-errors"]
        assert (code, path) in [(e["code"], e["path"]) for e in problem["errors"]]
    # A number no contact has: not added (reported in `errors`).
    status, body = await post(account, "/api/v4/calls", [call], token)
    assert status == 200 and body["_embedded"]["calls"] == []
    assert body["errors"][0]["title"] == "Entity not found"
    lead = {"source_uid": "u1", "source_name": "pbx-bridge",
            "metadata": {"uniq": "1", "duration": 0, "service_code": "x", "phone": "+74951110000",
                         "called_at": 1, "from": "+79161234567"}}
    status, body = await post(account, "/api/v4/leads/unsorted/sip", [lead], token)
    assert status == 200 and len(body["_embedded"]["unsorted"]) == 1
    status, body = await post(account, "/api/v4/leads/unsorted/sip", [lead], token)
    assert status == 400 and body["validation-errors"][0]["errors"][0]["code"] == "Duplicate"
    metadata = {k: v for k, v in lead["metadata"].items() if k != "uniq"}
    no_uniq = {**lead, "source_uid": "u2", "metadata": metadata}
    status, body = await post(account, "/api/v4/leads/unsorted/sip", [no_uniq], token)
    assert status == 400 and body["validation-errors"][0]["errors"][0]["path"] == "metadata.uniq"
    # Searching finds nothing: 204 without a body.
    async with aiohttp.ClientSession() as http, http.get(
            f"{account.url}/api/v4/contacts", params={"query": "9161234567"},
            headers={"Authorization": f"Bearer {token}"}) as resp:
        assert resp.status == 204 and await resp.read() == b""
    # Tokens: refresh tokens and authorization codes are single use.
    code = account.authorization_code()
    grant = {"client_id": account.client_id, "client_secret": account.client_secret,
             "redirect_uri": account.redirect_uri, "grant_type": "authorization_code", "code": code}
    assert (await post(account, "/oauth2/access_token", grant, None))[0] == 200
    status, body = await post(account, "/oauth2/access_token", grant, None)
    assert (status, body["hint"]) == (400, "Authorization code has been revoked")


async def test_seven_a_second_then_429(account: KommoContract, engine: AsyncEngine) -> None:
    account.per_second = 7
    token = account._issue()["access_token"]
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:

        async def one() -> int:
            async with http.get(f"{account.url}/api/v4/account") as resp:
                return resp.status

        statuses = await asyncio.gather(*(one() for _ in range(8)))  # within one second
    assert sorted(statuses) == [200] * 7 + [429]
    # The client at 7 a second: never refused, however many it sends.
    account._recent.clear()
    async with aiohttp.ClientSession() as session:
        client = KommoClient(KommoSettings(base_url=account.url, long_lived_token=token), session, engine)
        for _ in range(20):
            await client.request("GET", "/api/v4/account")
        assert account.limited == 1 and client.state.limit_errors == 0
        # Another integration takes most of the account's 7: one 429, a pause, then through.
        account.per_second = 3
        await client.request("GET", "/api/v4/account")
        client.pacer = WindowPacer(7, 1.0)
        for _ in range(6):
            await client.request("GET", "/api/v4/account")
        assert client.state.limit_errors >= 1 and client.state.state == "ok"
