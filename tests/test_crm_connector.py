"""The external CRM connector and its outbox, against a real aiohttp server started here that
plays the CRM: one that works (checks the HMAC), one that fails with 5xx then recovers, one that
hangs, one that answers garbage, one that refuses; kept across a restart; dead letters via CLI."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import aiohttp
import pytest
import sqlalchemy as sa
from aiohttp import web
from aiohttp.test_utils import TestServer
from sqlalchemy.ext.asyncio import AsyncEngine

from crm_sync import outbox
from crm_sync.connector import ConnectorSettings, HttpConnector, map_fields, sign, unmap_fields, verify
from crm_sync.outbox import DeliveryError, OutboxItem
from crm_sync.schema import outbox as outbox_table
from pbx_bridge.clients.hook import CrmHook
from pbx_bridge.clients.outbox_worker import OutboxWorker
from pbx_bridge.config import Settings
from pbx_bridge.db.engine import make_engine
from tests.crm_trace_records import replay, trace_records
from tests.e2e_support import free_port

ROOT = Path(__file__).resolve().parent.parent
SECRET = "s3cret-for-tests"


@dataclass
class FakeCrm:
    """The CRM's behaviour, switchable while the test runs."""

    mode: str = "ok"  # ok | fail | hang | garbage | refuse
    fail_times: int = 0  # with mode "ok": answer 503 this many times first
    received: list[dict[str, object]] = field(default_factory=list)
    attempts: int = 0
    bad_signatures: int = 0

    async def post(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.attempts += 1
        if not verify(body, SECRET, request.headers.get("X-Signature", "")):
            self.bad_signatures += 1
            return web.json_response({"error": "bad signature"}, status=401)
        if self.mode == "hang":
            await asyncio.sleep(30)
        if self.mode == "garbage":
            return web.Response(text="<html>Service temporarily unavai", content_type="text/html")
        if self.mode == "refuse":
            return web.json_response({"error": "validation failed"}, status=422)
        if self.mode == "fail" or self.fail_times > 0:
            self.fail_times -= 1
            return web.Response(status=503, text="maintenance")
        self.received.append(
            {
                "path": request.path,
                "key": request.headers["Idempotency-Key"],
                "event": request.headers["X-Pbx-Bridge-Event"],
                "body": json.loads(body),
            }
        )
        return web.json_response({"id": len(self.received)})

    async def lookup(self, request: web.Request) -> web.Response:
        signed = request.path_qs.encode()
        if not verify(signed, SECRET, request.headers.get("X-Signature", "")):
            return web.json_response({"error": "bad signature"}, status=401)
        if request.query.get("phone") == "+74951234567":
            return web.json_response([{"TITLE": "Ivan from CRM", "org": {"name": "Acme"}, "ID": 77}])
        return web.json_response({"error": "not found"}, status=404)


Server = Callable[[FakeCrm], Awaitable[str]]


@pytest.fixture
async def crm_server() -> Callable[[FakeCrm], Awaitable[str]]:
    servers: list[TestServer] = []

    async def start(crm: FakeCrm) -> str:
        app = web.Application()
        app.router.add_post("/contacts", crm.post)
        app.router.add_post("/activities", crm.post)
        app.router.add_get("/contacts", crm.lookup)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return str(server.make_url("")).rstrip("/")

    yield start  # type: ignore[misc]
    for server in servers:
        await server.close()


def external(settings: Settings, base: str, *, attempts: int = 10, timeout: float = 5.0) -> Settings:
    crm = settings.crm
    crm.external_enabled = True
    crm.external_contact_url = f"{base}/contacts"
    crm.external_call_url = f"{base}/activities"
    crm.external_lookup_url = f"{base}/contacts?phone={{phone}}"
    crm.external_fields = {"name": "TITLE", "company": "org.name", "phone": "PHONE", "client_id": "ID"}
    crm.external_hmac_secret = SECRET
    crm.external_timeout = timeout
    crm.external_connect_timeout = min(timeout, 1.0)
    crm.outbox_max_attempts = attempts
    crm.outbox_retry_base = 0.05
    crm.outbox_retry_max = 0.2
    crm.outbox_poll_interval = 0.05
    return settings


async def wait_for(check: Callable[[], Awaitable[bool]]) -> None:
    """Poll the database (the outbox has no event to wait on from outside) for up to 20 s."""
    for _ in range(400):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached within 20 s")


async def items(engine: AsyncEngine, state: outbox.State = "all") -> list[OutboxItem]:
    async with engine.connect() as conn:
        return await outbox.list_items(conn, state, limit=1000)


async def all_delivered(engine: AsyncEngine) -> bool:
    found = await items(engine)
    return bool(found) and all(i.delivered_at is not None for i in found)


def test_signature_and_field_mapping() -> None:
    body = b'{"a":1}'
    # A vector computed outside sign(): printf '{"a":1}' | openssl dgst -sha256 -hmac k
    assert sign(body, "k") == "sha256=c3a92ff9e274cdcce27a58c15a78ec6dcbbdbd0038a87e7a11baef2028fd8bff"
    assert verify(body, "k", "sha256=c3a92ff9e274cdcce27a58c15a78ec6dcbbdbd0038a87e7a11baef2028fd8bff")
    assert sign(body, "k") != sign(body, "other")
    assert verify(body, "k", sign(body, "k")) and not verify(body + b" ", "k", sign(body, "k"))
    mapped = map_fields({"name": "Ivan", "company": "Acme", "x": 1}, {"name": "TITLE", "company": "org.name"})
    assert mapped == {"TITLE": "Ivan", "org": {"name": "Acme"}, "x": 1}
    assert unmap_fields(mapped, {"name": "TITLE", "company": "org.name"}) == {
        "name": "Ivan",
        "company": "Acme",
        "x": 1,
    }


async def run_calls(
    engine: AsyncEngine, settings: Settings, worker: OutboxWorker | None, names: list[str]
) -> None:
    hook = CrmHook(engine, settings, outbox_wake=worker.wake if worker else None)
    records = trace_records()
    for name in names:
        await replay(engine, hook, records[name])


async def test_working_crm_gets_everything_signed_and_in_order(
    engine: AsyncEngine, settings: Settings, crm_server: Server
) -> None:
    crm = FakeCrm()
    external(settings, await crm_server(crm))
    worker = OutboxWorker(engine, settings)
    await worker.start()
    try:
        await run_calls(
            engine, settings, worker, ["inbound_answered", "inbound_noanswer", "inbound_answered_recorded"]
        )
        await wait_for(lambda: all_delivered(engine))
    finally:
        await worker.stop()
    assert crm.bad_signatures == 0
    by_phone: dict[str, list[str]] = {}
    for got in crm.received:
        body = got["body"]
        assert isinstance(body, dict)
        by_phone.setdefault(str(body["PHONE"]), []).append(
            f"{got['event']}:{body.get('linkedid', body.get('TITLE'))}"
        )
    assert by_phone == {
        "+74951234567": [
            "contact:Ivan Petrov",
            "call:inbound_answered-linkedid",
            "call:inbound_answered_recorded-linkedid",
        ],
        "+79161234567": ["contact:8 (916) 123-45-67", "call:inbound_noanswer-linkedid"],
    }
    contact = next(g for g in crm.received if g["event"] == "contact")
    assert contact["path"] == "/contacts" and str(contact["key"]).startswith("pbx-bridge-outbox-")
    call = next(g for g in crm.received if g["event"] == "call")
    assert call["path"] == "/activities"
    body = call["body"]
    assert isinstance(body, dict) and body["status"] == "answered" and body["operator"] == "101"
    assert isinstance(body["ID"], int)  # client_id mapped to the CRM's name


async def test_failing_crm_retried_with_backoff_until_it_recovers_order_kept(
    engine: AsyncEngine, settings: Settings, crm_server: Server
) -> None:
    crm = FakeCrm(fail_times=7)
    external(settings, await crm_server(crm))
    worker = OutboxWorker(engine, settings)
    await worker.start()
    try:
        await run_calls(
            engine,
            settings,
            worker,
            [
                "inbound_answered",
                "queue_ringall_answered",
                "inbound_answered_recorded",
                "sip_inbound_answered_recorded",
            ],
        )
        await wait_for(lambda: all_delivered(engine))
    finally:
        await worker.stop()
    assert crm.attempts >= 7 + len(crm.received)
    found = await items(engine)
    assert any(i.attempts > 1 for i in found)  # some needed several tries
    order = [i.id for i in found if i.client_key == "phone:+74951234567"]
    got = [int(str(g["key"]).rsplit("-", 1)[1]) for g in crm.received]
    ivan_got = [k for k in got if k in order]
    assert ivan_got == order  # in order per client, despite the failures


async def test_hanging_crm_times_out_and_is_retried(
    engine: AsyncEngine, settings: Settings, crm_server: Server
) -> None:
    crm = FakeCrm(mode="hang")
    external(settings, await crm_server(crm), timeout=0.3)
    worker = OutboxWorker(engine, settings)
    await worker.start()
    try:
        await run_calls(engine, settings, worker, ["outbound_answered"])

        async def timed_out() -> bool:
            return any("did not answer within 0.3 s" in (i.last_error or "") for i in await items(engine))

        await wait_for(timed_out)
        assert not crm.received
        crm.mode = "ok"
        await wait_for(lambda: all_delivered(engine))
    finally:
        await worker.stop()
    assert [g["event"] for g in crm.received] == ["contact", "call"]


async def test_garbage_answer_is_retried(engine: AsyncEngine, settings: Settings, crm_server: Server) -> None:
    crm = FakeCrm(mode="garbage")
    external(settings, await crm_server(crm))
    worker = OutboxWorker(engine, settings)
    await worker.start()
    try:
        await run_calls(engine, settings, worker, ["click_to_call"])

        async def garbage_seen() -> bool:
            return any("not JSON" in (i.last_error or "") for i in await items(engine))

        await wait_for(garbage_seen)
        crm.mode = "ok"
        await wait_for(lambda: all_delivered(engine))
    finally:
        await worker.stop()
    assert [g["event"] for g in crm.received] == ["contact", "call"]


async def test_refused_item_is_dead_at_once_and_does_not_block(
    engine: AsyncEngine, settings: Settings, crm_server: Server
) -> None:
    crm = FakeCrm(mode="refuse")
    external(settings, await crm_server(crm))
    worker = OutboxWorker(engine, settings)
    await worker.start()
    try:
        await run_calls(engine, settings, worker, ["queue_ringall_answered"])

        async def dead_seen() -> bool:
            return len(await items(engine, "dead")) == 2

        await wait_for(dead_seen)
    finally:
        await worker.stop()
    dead = await items(engine, "dead")
    assert all(i.attempts == 1 and "HTTP 422" in (i.last_error or "") for i in dead)


async def test_outbox_kept_across_restart(
    engine: AsyncEngine, settings: Settings, db_url: str, crm_server: Server
) -> None:
    """CRM down while the first worker runs; the bridge restarts (new engine, new worker): the
    same items are delivered, once each."""
    crm = FakeCrm(mode="fail")
    external(settings, await crm_server(crm))
    first_engine = make_engine(db_url)
    worker = OutboxWorker(first_engine, settings)
    await worker.start()
    await run_calls(first_engine, settings, worker, ["inbound_answered", "inbound_busy"])
    await wait_for(lambda: _some_attempted(first_engine))
    await worker.stop()
    await first_engine.dispose()
    pending = await items(engine, "pending")
    assert len(pending) == 4 and not crm.received

    crm.mode = "ok"
    second_engine = make_engine(db_url)
    worker2 = OutboxWorker(second_engine, settings)
    await worker2.start()
    try:
        await wait_for(lambda: all_delivered(engine))
    finally:
        await worker2.stop()
        await second_engine.dispose()
    keys = [g["key"] for g in crm.received]
    assert sorted(keys) == sorted(f"pbx-bridge-outbox-{i.id}" for i in pending)


async def _some_attempted(engine: AsyncEngine) -> bool:
    return any(i.attempts > 0 for i in await items(engine))


async def test_crm_down_is_backed_off_as_a_whole_and_nothing_becomes_dead(
    engine: AsyncEngine, settings: Settings
) -> None:
    """30 clients' items wait while nothing listens on the CRM's port (connection refused): the
    worker does not hammer the dead CRM with a try per item per round (the circuit opens after
    the first failed round, then one item probes), no item becomes a dead letter however many
    probes it takes, and when the CRM comes up on that port everything goes out, in order."""
    port = free_port()
    external(settings, f"http://127.0.0.1:{port}", attempts=2)
    now = outbox.utcnow()
    async with engine.begin() as conn:
        for n in range(30):
            for kind in ("contact", "call"):
                await outbox.enqueue(conn, f"phone:+7916000{n:04d}", kind, {"n": n, "kind": kind}, now)
    worker = OutboxWorker(engine, settings)
    await worker.start()
    try:
        await asyncio.sleep(2.0)  # probes every 0.05 .. 0.2 s (the test's retry settings)
        found = await items(engine)
        tries = sum(i.attempts for i in found)
        probed = [i for i in found if i.attempts > 2]
        # Per item and round, 30 clients for 2 s would be ~300 tries; the circuit: the first
        # round's concurrent sends (8) plus one probe per pause.
        assert 0 < tries < 30, tries
        assert probed and all("unreachable" in (i.last_error or "") for i in probed)
        assert await items(engine, "dead") == []  # past max_attempts, and still not dead

        crm = FakeCrm()
        app = web.Application()
        app.router.add_post("/contacts", crm.post)
        app.router.add_post("/activities", crm.post)
        server = TestServer(app, host="127.0.0.1", port=port)
        await server.start_server()
        try:
            await wait_for(lambda: all_delivered(engine))
        finally:
            await server.close()
    finally:
        await worker.stop()
    assert len(crm.received) == 60
    for n in range(30):
        mine = [g["event"] for g in crm.received if g["body"]["n"] == n]  # type: ignore[index]
        assert mine == ["contact", "call"]


async def test_refused_items_are_dead_letters_listed_and_retried_via_cli(
    engine: AsyncEngine, settings: Settings, db_url: str, crm_server: Server
) -> None:
    crm = FakeCrm(mode="refuse")
    external(settings, await crm_server(crm), attempts=3)
    worker = OutboxWorker(engine, settings)
    await worker.start()
    try:
        await run_calls(engine, settings, worker, ["inbound_noanswer"])

        async def dead() -> bool:
            return len(await items(engine, "dead")) == 2

        await wait_for(dead)
    finally:
        await worker.stop()
    dead_items = await items(engine, "dead")
    assert all(i.attempts == 1 and "HTTP 422" in (i.last_error or "") for i in dead_items)

    env = {k: v for k, v in os.environ.items() if not k.startswith("PBX_BRIDGE_")}
    env["PBX_BRIDGE_DATABASE__URL"] = db_url

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pbx_bridge", *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=60,
        )

    listed = await asyncio.to_thread(cli, "outbox", "dead")
    assert listed.returncode == 0, listed.stderr
    for item in dead_items:
        assert str(item.id) in listed.stdout and "dead" in listed.stdout
    assert "HTTP 422" in listed.stdout
    as_json = await asyncio.to_thread(cli, "outbox", "dead", "--json")
    assert [i["id"] for i in json.loads(as_json.stdout)] == [i.id for i in dead_items]
    missing = await asyncio.to_thread(cli, "outbox", "retry", "99999")
    assert missing.returncode == 1 and "no outbox item 99999" in missing.stderr
    for item in dead_items:
        retried = await asyncio.to_thread(cli, "outbox", "retry", str(item.id))
        assert retried.returncode == 0 and "re-queued" in retried.stdout
    assert await items(engine, "dead") == []
    pending = await asyncio.to_thread(cli, "outbox", "list")
    assert "pending" in pending.stdout

    # The CRM accepts them now: the re-queued items go out.
    crm.mode = "ok"
    worker = OutboxWorker(engine, settings)
    await worker.start()
    try:
        await wait_for(lambda: all_delivered(engine))
    finally:
        await worker.stop()
    assert [g["event"] for g in crm.received] == ["contact", "call"]


async def test_lookup_signed_and_mapped(settings: Settings, crm_server: Server) -> None:
    crm = FakeCrm()
    external(settings, await crm_server(crm))
    from pbx_bridge.crm_connectors.options import connector_settings

    async with aiohttp.ClientSession() as session:
        connector = HttpConnector(connector_settings(settings), session)
        found = await connector.lookup("+74951234567")
        assert found == {"name": "Ivan from CRM", "company": "Acme", "client_id": 77}
        assert await connector.lookup("+74950000000") is None
        wrong = HttpConnector(replace(connector_settings(settings), hmac_secret="wrong"), session)
        with pytest.raises(DeliveryError, match="HTTP 401"):
            await wrong.lookup("+74951234567")


async def test_screen_pop_from_external_crm_when_no_local_card(
    engine: AsyncEngine, settings: Settings, crm_server: Server
) -> None:
    crm = FakeCrm()
    external(settings, await crm_server(crm))
    worker = OutboxWorker(engine, settings)
    await worker.start()
    try:
        settings.crm.inbound_policy = "never"
        hook = CrmHook(engine, settings, connector=worker.connector, outbox_wake=worker.wake)
        changes = await replay(engine, hook, trace_records()["inbound_answered"])
    finally:
        await worker.stop()
    ringing = next(c for c in changes if c.kind == "ringing")
    assert ringing.client is not None and ringing.client["id"] is None
    assert ringing.client["name"] == "Ivan from CRM" and ringing.client["external"]["client_id"] == 77


async def test_enqueue_is_part_of_the_change_transaction(engine: AsyncEngine) -> None:
    from datetime import UTC, datetime

    with pytest.raises(RuntimeError):
        async with engine.begin() as conn:
            await outbox.enqueue(conn, "phone:+7", "call", {"x": 1}, datetime.now(UTC))
            raise RuntimeError("the change failed")
    async with engine.connect() as conn:
        assert (await conn.execute(sa.select(sa.func.count()).select_from(outbox_table))).scalar_one() == 0


def test_retry_policy_backoff() -> None:
    policy = outbox.RetryPolicy(max_attempts=5, base_seconds=2, max_seconds=10)
    assert [policy.delay(n) for n in range(1, 6)] == [2, 4, 8, 10, 10]


async def test_connector_without_url_for_kind_is_a_noop(settings: Settings) -> None:
    async with aiohttp.ClientSession() as session:
        connector = HttpConnector(ConnectorSettings(), session)
        from datetime import UTC, datetime

        now = datetime.now(UTC)
        await connector.send(OutboxItem(1, "k", "call", {}, 0, now, now, None, False, None))


async def test_serve_wiring_starts_hook_and_worker(
    engine: AsyncEngine, settings: Settings, crm_server: Server
) -> None:
    """What `serve` starts: the hook published for the pipeline, the worker delivering."""
    from pbx_bridge.clients.service import CrmServices
    from pbx_bridge.db.engine import make_sessionmaker
    from pbx_bridge.runtime import Runtime

    crm = FakeCrm()
    external(settings, await crm_server(crm))
    runtime = Runtime(settings=settings, engine=engine, sessions=make_sessionmaker(engine))
    services = CrmServices(runtime)
    await services.start()
    try:
        hook = runtime.services["crm_hook"]
        assert isinstance(hook, CrmHook) and isinstance(runtime.services["crm_outbox"], OutboxWorker)
        await replay(engine, hook, trace_records()["inbound_answered"])
        await wait_for(lambda: all_delivered(engine))
    finally:
        await services.stop()
    assert [g["event"] for g in crm.received] == ["contact", "call"]


async def test_purge_delivered_keeps_dead_and_pending(engine: AsyncEngine) -> None:
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC)
    async with engine.begin() as conn:
        old = await outbox.enqueue(conn, "phone:+1", "call", {}, now - timedelta(days=10))
        fresh = await outbox.enqueue(conn, "phone:+1", "call", {}, now)
        dead = await outbox.enqueue(conn, "phone:+2", "call", {}, now - timedelta(days=10))
        pending = await outbox.enqueue(conn, "phone:+3", "call", {}, now - timedelta(days=10))
        await outbox.mark_delivered(conn, old, now - timedelta(days=9))
        await outbox.mark_delivered(conn, fresh, now)
        item = await outbox.get_item(conn, dead)
        assert item is not None
        await outbox.mark_failed(conn, item, DeliveryError("no", retryable=False), now, outbox.RetryPolicy())
        assert await outbox.purge_delivered(conn, now - timedelta(days=7)) == 1
    assert sorted(i.id for i in await items(engine)) == sorted([fresh, dead, pending])


async def test_a_call_from_a_number_that_does_not_parse_is_still_posted(
    engine: AsyncEngine, settings: Settings, crm_server: Server
) -> None:
    """+7 930 ... is an unassigned range: no card can be made for it, but the call still goes to
    the CRM, with the number as it came."""
    crm = FakeCrm()
    external(settings, await crm_server(crm))
    worker = OutboxWorker(engine, settings)
    await worker.start()
    try:
        record = replace(trace_records()["inbound_noanswer"], linkedid="unassigned-range",
                         customer_number="+79300395846")
        hook = CrmHook(engine, settings, outbox_wake=worker.wake)
        await replay(engine, hook, record)
        await wait_for(lambda: all_delivered(engine))
    finally:
        await worker.stop()
    (got,) = crm.received
    body = got["body"]
    assert got["event"] == "call" and isinstance(body, dict)
    assert body["customer_number"] == "+79300395846" and body["PHONE"] is None and body["ID"] is None
    assert body["linkedid"] == "unassigned-range" and body["status"] == "no_answer"
    (item,) = await items(engine)
    assert item.client_key == "number:+79300395846"
