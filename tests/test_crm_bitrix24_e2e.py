"""Bitrix24 end to end: the bridge as `serve` assembles it, the shared traces replayed by the
embedded simulator over TCP, and a Bitrix24 contract server (tests/contract_bitrix24.py) that
enforces the documented API. What the portal receives is compared request by request, field by
field, with what each call must produce."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from crm_sync.bitrix24.commands import transcript_messages
from crm_sync.call_media import TranscriptTurn
from pbx_bridge.assembly import Bridge
from pbx_bridge.auth.tokens import create_token
from pbx_bridge.calls.record import CallRecord, to_datetime
from pbx_bridge.config import Bitrix24Config, Settings
from tests import crm_connector_support as support
from tests.contract_bitrix24 import Bitrix24Contract
from tests.e2e_support import all_calls, wait_until

USERS = {"101": 11, "102": 12, "103": 13}


@pytest.fixture
async def portal() -> AsyncIterator[Bitrix24Contract]:
    contract = Bitrix24Contract()
    await contract.start()
    yield contract
    await contract.stop()


def bitrix24(settings: Settings, contract: Bitrix24Contract, port: int | None = None) -> None:
    support.configure(settings)
    seed = contract.issue_tokens()
    url = f"http://127.0.0.1:{port or contract.port}"
    settings.crm.bitrix24 = Bitrix24Config(
        enabled=True, portal_url=url, client_id=contract.client_id, client_secret=contract.client_secret,
        refresh_token=seed["refresh_token"], application_token=contract.application_token,
        oauth_url=f"{url}/oauth/token/", requests_per_second=20.0, burst=10, timeout=5.0,
        attach_wait_minutes=10.0)  # a loaded machine transcribes slowly


def start_date(record: CallRecord) -> str:
    started = to_datetime(record.started_at)
    assert started is not None
    return started.isoformat(timespec="seconds")


def register(record: CallRecord, user: int, *, type_: int, crm_create: int, show: int) -> tuple[str, Any]:
    params: dict[str, Any] = {"USER_ID": user, "PHONE_NUMBER": record.customer_number, "TYPE": type_,
                              "CALL_START_DATE": start_date(record), "CRM_CREATE": crm_create,
                              "SHOW": show, "EXTERNAL_CALL_ID": f"{record.pbx}:{record.linkedid}"}
    if record.direction == "inbound" and record.did:
        params["LINE_NUMBER"] = record.did.lstrip("+")
    return "telephony.externalCall.register", params


async def media_requests(bridge: Bridge, record: CallRecord, call_id: str) -> list[tuple[str, Any]]:
    """attachRecord with the stored WAV, attachTranscription with the stored transcript."""
    assert record.id is not None
    out: list[tuple[str, Any]] = []
    wav = await support.recording_bytes(bridge, record.id)
    assert wav is not None, "an answered call is recorded"
    out.append(("telephony.externalCall.attachRecord", {
        "CALL_ID": call_id, "FILENAME": f"call-{record.id}.wav",
        "FILE_CONTENT": base64.b64encode(wav).decode()}))
    turns = await support.transcript_turns(bridge.runtime.engine, record.id)
    assert turns is not None, "an answered call is transcribed"
    messages = transcript_messages(TranscriptTurn(t.speaker, t.start, t.end, t.text) for t in turns)
    if messages:
        out.append(("telephony.call.attachTranscription", {"CALL_ID": call_id, "MESSAGES": messages}))
    return out


def lowered(requests: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    return [(method.lower(), support.strings(params)) for method, params in requests]


async def test_traces_through_serve_give_the_documented_requests_field_by_field(
        settings: Settings, engine: AsyncEngine, traces: Path, portal: Bitrix24Contract) -> None:
    bitrix24(settings, portal)
    async with support.running(settings, engine) as bridge:
        # Set-up: users by extension, a line per DID (named after its ad channel), the handler.
        assert [(e.method, e.error) for e in portal.log] == [
            ("refresh", None), ("user.get", None), ("telephony.externalline.get", None),
            ("telephony.externalline.add", None), ("telephony.externalline.add", None),
            ("telephony.externalline.add", None), ("event.bind", None)]
        assert portal.lines == {
            "74951110000": {"NUMBER": "74951110000", "NAME": "Yandex Direct", "CRM_AUTO_CREATE": "Y"},
            "74951112222": {"NUMBER": "74951112222", "NAME": "website", "CRM_AUTO_CREATE": "Y"},
            "74951113333": {"NUMBER": "74951113333", "NAME": "Avito", "CRM_AUTO_CREATE": "Y"}}
        assert portal.handlers == {"ONEXTERNALCALLSTART": f"{settings.server.public_url}/hooks/bitrix24"}
        expected: list[tuple[str, Any]] = []

        def call_id_of(record: CallRecord) -> str:
            ext = f"{record.pbx}:{record.linkedid}"
            return next(c.call_id for c in portal.calls.values() if c.fields.get("EXTERNAL_CALL_ID") == ext)

        # A ring-all queue: the card pops for 101, is shown to 102 as it rings, hidden from 101
        # when 102 answers; finish by 102 with the talk time; the recording and the transcript.
        ringall = await support.replay(bridge, traces / "queue_ringall_answered.ami", speed=2)
        await support.delivered_everything(engine)
        assert (ringall.status, ringall.operators_rung, ringall.operator) == (
            "answered", ["101", "102"], "102")
        cid = call_id_of(ringall)
        expected += [
            register(ringall, 11, type_=2, crm_create=1, show=1),
            ("telephony.externalCall.show", {"CALL_ID": cid, "USER_ID": [12]}),
            ("telephony.externalCall.hide", {"CALL_ID": cid, "USER_ID": [11]}),
            ("telephony.externalCall.finish", {"CALL_ID": cid, "USER_ID": 12, "DURATION": 5,
                                                "STATUS_CODE": "200"}),
            *await media_requests(bridge, ringall, cid)]
        assert lowered(portal.telephony()) == lowered(expected)

        # Busy, no answer: missed calls, finished with their status codes and no talk.
        for name, user, code in (("inbound_busy", 11, "486"), ("inbound_noanswer", 12, "304")):
            record = await support.replay(bridge, traces / f"{name}.ami", speed=4)
            await support.delivered_everything(engine)
            cid = call_id_of(record)
            expected += [register(record, user, type_=2, crm_create=1, show=1),
                         ("telephony.externalCall.finish", {"CALL_ID": cid, "USER_ID": user, "DURATION": 0,
                                                             "STATUS_CODE": code})]
            assert lowered(portal.telephony()) == lowered(expected), name

        # Outbound: TYPE 1, no lead unless answered (the outbound policy), the operator's card.
        outbound = await support.replay(bridge, traces / "outbound_answered.ami", speed=2)
        await support.delivered_everything(engine)
        cid = call_id_of(outbound)
        expected += [register(outbound, 11, type_=1, crm_create=0, show=1),
                     ("telephony.externalCall.finish", {"CALL_ID": cid, "USER_ID": 11, "DURATION": 6,
                                                         "STATUS_CODE": "200"}),
                     *await media_requests(bridge, outbound, cid)]
        assert lowered(portal.telephony()) == lowered(expected)

        # Click-to-call from Bitrix24: OnExternalCallStart places the call; its CALL_ID is reused
        # (no register), finished with the talk time, the recording attached to it.
        before = {c.id for c in await all_calls(engine)}
        c2c_id, status = await portal.external_call_start(11, "+79035550199")
        assert status == 200, portal.last_event_answer
        placed = await support.ended_call(
            engine, lambda c: c.id not in before and c.click_to_call_id is not None)
        await support.delivered_everything(engine)
        assert (placed.direction, placed.customer_number, placed.operator) == (
            "outbound", "+79035550199", "101")
        expected += [("telephony.externalCall.finish", {"CALL_ID": c2c_id, "USER_ID": 11,
                                                        "DURATION": round(placed.talk_seconds or 0),
                                                        "STATUS_CODE": "200"}),
                     *await media_requests(bridge, placed, c2c_id)]
        assert lowered(portal.telephony()) == lowered(expected)
        assert await support.dead(engine) == []
        assert portal.limit_errors == 0



def by_call(portal: Bitrix24Contract) -> dict[str, list[str]]:
    """Each portal call's methods, in the order the portal ran them."""
    out: dict[str, list[str]] = {}
    for method, params in portal.telephony():
        if method.endswith(".register"):
            ext = str(params["EXTERNAL_CALL_ID"])
            key = next(c.call_id for c in portal.calls.values() if c.fields.get("EXTERNAL_CALL_ID") == ext)
        else:
            key = str(params["CALL_ID"])
        out.setdefault(key, []).append(method.rsplit(".", 1)[1].lower())
    return out


async def test_portal_down_for_the_whole_run_loses_nothing_and_delivers_in_order(
        settings: Settings, engine: AsyncEngine, traces: Path) -> None:
    port = support.free_port()
    portal = Bitrix24Contract()
    bitrix24(settings, portal, port)
    settings.crm.bitrix24.show_max_age_seconds = 0.5  # the cards are old news once it is back
    async with support.running(settings, engine) as bridge:
        assert bridge.crm.connector is not None
        records = [await support.replay(bridge, traces / f"{name}.ami", speed=4)
                   for name in ("queue_ringall_answered", "inbound_busy", "outbound_answered")]
        assert await support.pending(engine) > 0 and portal.log == []
        state = bridge.crm.connector.state
        assert state.state == "down", state
        await portal.start(port)
        try:
            await support.delivered_everything(engine, within=180)
            assert await support.dead(engine) == []
            calls = by_call(portal)
            assert len(calls) == 3
            sequences = sorted(calls.values(), key=len)
            # Busy: no recording. The others: the stale card is not shown, hides still go.
            assert sequences == [
                ["register", "finish"],
                ["register", "finish", "attachrecord", "attachtranscription"],
                ["register", "hide", "finish", "attachrecord", "attachtranscription"]]
            registers = [p for m, p in portal.telephony() if m.endswith(".register")]
            assert {str(p["SHOW"]) for p in registers} == {"0"}
            assert {str(p["PHONE_NUMBER"]) for p in registers} == {r.customer_number for r in records}
            assert bridge.crm.connector.state.state == "ok"
        finally:
            await portal.stop()


async def test_token_expiring_mid_run_is_refreshed_and_nothing_is_lost(
        settings: Settings, engine: AsyncEngine, traces: Path, portal: Bitrix24Contract) -> None:
    bitrix24(settings, portal)
    support.configure(settings, transcribe=False)
    async with support.running(settings, engine) as bridge:
        await support.replay(bridge, traces / "inbound_busy.ami", speed=4)
        await support.delivered_everything(engine)
        portal.expire_access_tokens()
        await support.replay(bridge, traces / "inbound_noanswer.ami", speed=4)
        await support.delivered_everything(engine)
        assert await support.dead(engine) == []
        errors = [(e.kind, e.method, e.error) for e in portal.log if e.error]
        assert errors == [("api", "batch", "expired_token")]
        refreshes = [e.error for e in portal.log if e.kind == "oauth"]
        assert refreshes == [None, None]  # the seed, then mid-run
        assert [sequence for sequence in by_call(portal).values()] == [["register", "finish"]] * 2
        assert bridge.crm.connector is not None and bridge.crm.connector.state.token_refreshes == 2


async def test_refresh_token_gone_stops_the_connector_without_a_loop_until_reinstalled(
        settings: Settings, engine: AsyncEngine, traces: Path, portal: Bitrix24Contract) -> None:
    bitrix24(settings, portal)
    support.configure(settings, transcribe=False)
    async with support.running(settings, engine) as bridge:
        connector = bridge.crm.connector
        assert connector is not None
        portal.expire_access_tokens()
        portal.revoke_refresh_tokens()
        await support.replay(bridge, traces / "inbound_busy.ami", speed=4)
        await wait_until(lambda: connector.state.state == "stopped", 10, "the connector stops")
        assert "refresh token refused" in connector.state.detail and "invalid_grant" in connector.state.detail
        sent = len(portal.log)
        await asyncio.sleep(3)
        assert len(portal.log) == sent, "a stopped connector sends nothing"
        assert [e.error for e in portal.log if e.kind == "oauth"] == [None, "invalid_grant"]
        assert await support.pending(engine) == 2 and await support.dead(engine) == []
        # /readyz and /metrics say so.
        async with engine.begin() as conn:
            _, token = await create_token(conn, name="ops", role="manager")
        base = f"http://127.0.0.1:{bridge.http_port}"
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
            async with http.get(f"{base}/readyz") as r:
                crm = (await r.json())["crm"]
            async with http.get(f"{base}/metrics") as r:
                metrics = await r.text()
        assert (crm["connector"], crm["state"], crm["backlog"], crm["dead_letters"]) == (
            "bitrix24", "stopped", 2, 0)
        assert 'pbx_bridge_crm_connector_state{connector="bitrix24",state="stopped"} 1.0' in metrics
        assert 'pbx_bridge_crm_outbox_backlog{connector="bitrix24"} 2.0' in metrics
        # The application installed again: new tokens, and what waited is delivered.
        assert await portal.install(f"{base}/hooks/bitrix24") == 200
        await support.delivered_everything(engine, within=60)
        assert list(by_call(portal).values()) == [["register", "finish"]]
        assert connector.state.state == "ok"
