"""The Bitrix24 contract server refuses what the documentation refuses (so a test passing against
it means something), and the client keeps under its limit; bad input to the bridge's event
handler gets a clear error and places nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from crm_sync import php_form
from crm_sync.bitrix24.api import Bitrix24Client, Bitrix24Settings
from crm_sync.pacing import LeakyBucketPacer
from pbx_bridge.config import Bitrix24Config, Settings
from tests import crm_connector_support as support
from tests.contract_bitrix24 import Bitrix24Contract
from tests.e2e_support import wait_until
from tests.test_crm_bitrix24_e2e import bitrix24, by_call


@pytest.fixture
async def portal() -> AsyncIterator[Bitrix24Contract]:
    contract = Bitrix24Contract(limit=1000)
    await contract.start()
    yield contract
    await contract.stop()


async def call(portal: Bitrix24Contract, method: str, params: dict[str, Any], *,
               token: str | None = None, webhook: bool = False) -> tuple[int, Any]:
    url = f"{portal.webhook_url}{method}" if webhook else f"{portal.url}/rest/{method}"
    body = dict(params) if webhook or token is None else {**params, "auth": token}
    async with aiohttp.ClientSession() as http, http.post(url, json=body) as resp:
        return resp.status, await resp.json()


async def test_documented_errors_in_bitrix24s_shape(portal: Bitrix24Contract) -> None:
    token = portal.issue_tokens()["access_token"]
    good = {"USER_ID": 11, "PHONE_NUMBER": "+74951234567", "TYPE": 2,
            "CALL_START_DATE": "2026-11-02T09:00:00+03:00"}
    cases: list[tuple[str, dict[str, Any], int, str, str]] = [
        ("telephony.externalCall.register", {k: v for k, v in good.items() if k != "USER_ID"}, 400,
         "ERROR_CORE", "USER_ID or USER_PHONE_INNER should be set"),
        ("telephony.externalCall.register", {**good, "USER_ID": 999}, 400, "ERROR_CORE",
         "User is not found or is not active"),
        ("telephony.externalCall.register", {**good, "TYPE": "inbound"}, 400, "ERROR_CORE", "Unknown TYPE"),
        ("telephony.externalCall.register", {**good, "PHONE_NUMBER": "call me"}, 400, "ERROR_CORE",
         "Unsupported phone number format"),
        ("telephony.externalCall.register", {**good, "CALL_START_DATE": "2026-11-02 09:00"}, 400,
         "ERROR_CORE", "CALL_START_DATE should be in the ISO-8601 format"),
        ("telephony.externalCall.finish", {"USER_ID": 11, "DURATION": 5}, 400, "INVALID_ARGUMENT",
         "CALL_ID must be a string"),
        ("telephony.externalCall.finish", {"CALL_ID": "externalCall.nope", "USER_ID": 11}, 400, "ERROR_CORE",
         "Call is not found (call should be registered prior to finishing)"),
        ("telephony.call.attachTranscription", {"CALL_ID": "externalCall.nope", "MESSAGES": []}, 400,
         "ERROR_CORE", "Call externalCall.nope is not found. Is it finished?"),
        ("telephony.externalCall.noSuchMethod", {}, 404, "ERROR_METHOD_NOT_FOUND", "Method not found!"),
    ]
    for method, params, status, code, text in cases:
        got = await call(portal, method, params, token=token)
        assert got == (status, {"error": code, "error_description": text}), (method, params)
    # A registered, not finished call: no record or transcript yet; then field checks.
    status, body = await call(portal, "telephony.externalCall.register", good, token=token)
    assert status == 200 and body["result"]["CALL_ID"].startswith("externalCall.")
    call_id = body["result"]["CALL_ID"]
    assert (await call(portal, "telephony.externalCall.register", good, token=token))[1]["result"][
        "CALL_ID"] == call_id, "the same fields within 30 minutes: the same CALL_ID"
    early = {"CALL_ID": call_id, "FILENAME": "a.wav", "FILE_CONTENT": "UklGRg=="}
    status, body = await call(portal, "telephony.externalCall.attachRecord", early, token=token)
    assert (status, body["error"]) == (400, "") and "not finished yet" in body["error_description"]
    status, body = await call(portal, "telephony.externalCall.finish",
                              {"CALL_ID": call_id, "USER_ID": 11, "DURATION": "five"}, token=token)
    assert (status, body["error"]) == (400, "INVALID_ARGUMENT")
    assert (await call(portal, "telephony.externalCall.finish", {"CALL_ID": call_id, "USER_ID": 11,
                                                                   "DURATION": 5}, token=token))[0] == 200
    for params, text in (({"FILENAME": "a.ogg", "FILE_CONTENT": "UklGRg=="},
                          "Wrong file extension. Only wav and mp3 are allowed"),
                         ({"FILENAME": "a.wav", "FILE_CONTENT": "%%%"},
                          "File content is not properly encoded. Base64 encoding is expected.")):
        assert await call(portal, "telephony.externalCall.attachRecord", {"CALL_ID": call_id, **params},
                          token=token) == (400, {"error": "ERROR_CORE", "error_description": text})
    bad_side = {"CALL_ID": call_id, "MESSAGES": [{"SIDE": "Operator", "START_TIME": 0, "STOP_TIME": 2,
                                                  "MESSAGE": "hello"}]}
    assert await call(portal, "telephony.call.attachTranscription", bad_side, token=token) == (
        400, {"error": "ERROR_CORE",
              "error_description": "MESSAGES[0][SIDE] should be either Client or User"})
    # Telephony needs an application: a webhook is refused (documented WRONG_AUTH_TYPE, 403).
    assert await call(portal, "telephony.externalCall.register", good, webhook=True) == (
        403, {"error": "WRONG_AUTH_TYPE",
              "error_description": "Current authorization type is denied for this method"})
    # No token, an unknown one, an expired one.
    assert (await call(portal, "user.get", {}))[1]["error"] == "NO_AUTH_FOUND"
    assert (await call(portal, "user.get", {}, token="nope"))[1]["error"] == "invalid_token"
    portal.expire_access_tokens()
    assert await call(portal, "user.get", {}, token=token) == (
        401, {"error": "expired_token", "error_description": "The access token provided has expired."})


async def test_batch_limit_refresh_and_results_passed_between_commands(portal: Bitrix24Contract) -> None:
    token = portal.issue_tokens()["access_token"]
    register = "telephony.externalCall.register?" + php_form.encode(
        {"USER_ID": 11, "PHONE_NUMBER": "+74951234567", "TYPE": 2})
    finish = "telephony.externalCall.finish?" + php_form.encode(
        {"CALL_ID": "$result[r][CALL_ID]", "USER_ID": 12, "DURATION": 3})
    status, body = await call(portal, "batch", {"halt": 0, "cmd": {"r": register, "f": finish}}, token=token)
    assert status == 200 and body["result"]["result_error"] == {}
    assert body["result"]["result"]["f"]["CALL_ID"] == body["result"]["result"]["r"]["CALL_ID"]
    status, body = await call(portal, "batch", {"cmd": {str(i): "user.get" for i in range(51)}}, token=token)
    assert (status, body["error"]) == (400, "ERROR_BATCH_LENGTH_EXCEEDED")
    # Refresh tokens are single use.
    seed = portal.issue_tokens()["refresh_token"]
    params = {"grant_type": "refresh_token", "client_id": portal.client_id,
              "client_secret": portal.client_secret, "refresh_token": seed}
    async with aiohttp.ClientSession() as http:
        async with http.get(portal.oauth_url, params=params) as r:
            assert r.status == 200 and (await r.json())["refresh_token"] != seed
        async with http.get(portal.oauth_url, params=params) as r:
            assert (r.status, (await r.json())["error"]) == (400, "invalid_grant")
    # The limit: over `limit` requests at once, QUERY_LIMIT_EXCEEDED with 503.
    portal.limit, portal.rate, portal._level = 3, 0.0, 0.0  # no draining during the test
    answers = [await call(portal, "user.get", {}, token=token) for _ in range(4)]
    assert [a[0] for a in answers] == [200, 200, 200, 503]
    assert answers[-1][1] == {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"}


async def test_client_learns_the_portals_limit_from_its_first_refusal(engine: AsyncEngine) -> None:
    portal = Bitrix24Contract(limit=4, rate=20.0)
    await portal.start()
    try:
        async with aiohttp.ClientSession() as session:
            client = Bitrix24Client(Bitrix24Settings(webhook_url=portal.webhook_url), session, engine,
                                    pacer=LeakyBucketPacer(20.0, 10))
            for _ in range(30):
                await client.call("user.get", {})
        assert portal.limit_errors == 1 and client.state.limit_errors == 1
        assert client.pacer.burst <= 4  # learnt: no more than the portal takes
        assert [e.error for e in portal.log].count(None) == 30
    finally:
        await portal.stop()


async def test_bad_events_are_refused_and_place_nothing(settings: Settings, engine: AsyncEngine,
                                                         portal: Bitrix24Contract) -> None:
    bitrix24(settings, portal)
    support.configure(settings, transcribe=False)
    async with support.running(settings, engine) as bridge:
        handler = f"http://127.0.0.1:{bridge.http_port}/hooks/bitrix24"
        sim = bridge.simulator
        assert sim is not None
        async with aiohttp.ClientSession() as http:
            # Not a form nor JSON; no event; a forged application token.
            json_type = {"Content-Type": "application/json"}
            async with http.post(handler, data=b"\xff\xfe", headers=json_type) as r:
                assert r.status == 400 and (await r.json())["error"]["code"] == "bad_request"
            async with http.post(handler, data="hello=1",
                                 headers={"Content-Type": "application/x-www-form-urlencoded"}) as r:
                assert r.status == 400
            _call, status = await portal.external_call_start(11, "+79035550199", token="forged")
            assert status == 403
            # A forged installation: the portal does not know its token, nothing is kept.
            forged = php_form.encode({"event": "ONAPPINSTALL", "auth": {
                "access_token": "x", "refresh_token": "y", "application_token": "z"}})
            async with http.post(handler, data=forged,
                                 headers={"Content-Type": "application/x-www-form-urlencoded"}) as r:
                assert r.status == 403
        # A user without an extension: 422, and Bitrix24's call is finished at once (480).
        call_id, status = await portal.external_call_start(1, "+79035550199")
        assert status == 422 and "UF_PHONE_INNER" in portal.last_event_answer
        await support.delivered_everything(engine)
        assert [a for a in sim.actions if a.name == "Originate"] == []
        assert portal.calls[call_id].finished
        assert portal.calls[call_id].fields["FINISH"]["STATUS_CODE"] == "480"
        # An invalid number: 422 from click-to-call, finished as "invalid number" (404).
        call_id, status = await portal.external_call_start(11, "12")
        assert status == 422
        await support.delivered_everything(engine)
        assert portal.calls[call_id].fields["FINISH"]["STATUS_CODE"] == "404"
        assert [a for a in sim.actions if a.name == "Originate"] == []


async def test_an_item_the_portal_refuses_is_a_dead_letter_and_holds_nothing_back(
        settings: Settings, engine: AsyncEngine, traces: Path, portal: Bitrix24Contract) -> None:
    bitrix24(settings, portal)
    support.configure(settings, transcribe=False)
    async with support.running(settings, engine) as bridge:
        # Boris (102) leaves after the bridge read the users: the portal refuses his calls.
        next(u for u in portal.users if u["UF_PHONE_INNER"] == "102")["ACTIVE"] = False
        await support.replay(bridge, traces / "inbound_noanswer.ami", speed=4)  # rings 102
        await support.replay(bridge, traces / "inbound_busy.ami", speed=4)  # rings 101
        await support.delivered_everything(engine)
        dead = await support.dead(engine)
        assert [d.kind for d in dead] == ["b24.register", "b24.finish"]
        assert all("User is not found or is not active" in (d.last_error or "") for d in dead)
        assert all(d.attempts == 1 for d in dead), "refused: dead at once, not retried"
        assert list(by_call(portal).values()) == [["register", "finish"]]  # 101's call went through
        assert bridge.crm.connector is not None and bridge.crm.connector.state.state == "ok"


async def test_webhook_mode_stops_at_the_first_telephony_refusal_and_loses_nothing(
        settings: Settings, engine: AsyncEngine, traces: Path, portal: Bitrix24Contract) -> None:
    support.configure(settings, transcribe=False)
    settings.crm.bitrix24 = Bitrix24Config(enabled=True, webhook_url=portal.webhook_url,
                                           requests_per_second=20.0)
    async with support.running(settings, engine) as bridge:
        connector = bridge.crm.connector
        assert connector is not None
        await support.replay(bridge, traces / "inbound_busy.ami", speed=4)
        await wait_until(lambda: connector.state.state == "stopped", 10, "stopped")
        assert "WRONG_AUTH_TYPE" in connector.state.detail
        assert [(e.method, e.error) for e in portal.log] == [
            ("user.get", None), ("telephony.externalcall.register", "WRONG_AUTH_TYPE"), ("batch", None)]
        assert await support.pending(engine) == 2 and await support.dead(engine) == []


async def test_a_call_from_bitrix24_the_operator_does_not_answer_is_finished_there(
        settings: Settings, engine: AsyncEngine, portal: Bitrix24Contract) -> None:
    bitrix24(settings, portal)
    support.configure(settings, transcribe=False)

    def no_answer(s: Settings) -> None:
        s.click_to_call.originate_timeout = 5

    async with support.running(settings, engine, no_answer) as bridge:
        assert bridge.simulator is not None
        bridge.simulator.settings.originate_outcomes = {"101": "operator_no_answer"}
        call_id, status = await portal.external_call_start(11, "+79035550199")
        assert status == 200, portal.last_event_answer
        await wait_until(lambda: portal.calls[call_id].finished, 20, "Bitrix24's call finished")
        finish = portal.calls[call_id].fields["FINISH"]
        assert (str(finish["USER_ID"]), str(finish["DURATION"])) == ("11", "0")
        assert str(finish["STATUS_CODE"]) == "304"  # nobody answered
        assert [m for m, _p in portal.telephony() if m.endswith("register")] == []
