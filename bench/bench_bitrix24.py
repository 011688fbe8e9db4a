"""Bitrix24 backlog drain: 1,000 ended calls (`--quick`: 200) waiting in the outbox, as after an
outage (each call: register and finish; every 4th a ring-all queue call with show and hide too),
delivered to a Bitrix24 contract server limited like a portal: 2 requests per second drained,
5 before blocking (QUERY_LIMIT_EXCEEDED). The client starts from the configuration's default
burst (10), so the portal refuses it once and it must learn.

Figures: calls per second drained, the portal's limit refusals (target: the first one only),
calls whose requests arrived out of order (target 0), requests per second used, dead letters.
Reference, same run, same backlog: the same connector against a portal without a limit.

Run: python -m bench.bench_bitrix24 [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

from crm_sync import outbox
from crm_sync.bitrix24 import items as b24
from crm_sync.bitrix24.api import CONNECTOR, MAX_BATCH, Bitrix24Client, Bitrix24Settings
from crm_sync.bitrix24.directory import UserDirectory
from crm_sync.bitrix24.sender import Bitrix24Sender
from crm_sync.connector_store import StoredAuth, save_auth
from pbx_bridge.db import migrate
from pbx_bridge.db.engine import make_engine
from tests.contract_bitrix24 import Bitrix24Contract  # the contract server of the tests

CALLS = 1000
PORTAL_RATE = 2.0
PORTAL_LIMIT = 5


async def backlog(engine: Any, calls: int) -> int:
    """The outbox of `calls` ended calls; returns the number of items."""
    now = datetime.now(UTC)
    count = 0
    async with engine.begin() as conn:
        for n in range(1, calls + 1):
            ringall = n % 4 == 0
            ref = b24.call_ref(pbx="bench", linkedid=f"bench-{n}", call_id=n)
            fields = b24.register_fields(number=f"+7916{n:07d}", direction="inbound", did="+74951110000",
                                         extension="101", started_at=now - timedelta(minutes=10),
                                         crm_create=True, show=True)
            key = b24.client_key(n)
            items: list[tuple[str, dict[str, Any]]] = [(b24.KIND_REGISTER, {**ref, **fields})]
            if ringall:
                items += [(b24.KIND_SHOW, {**ref, "extensions": ["102"]}),
                          (b24.KIND_HIDE, {**ref, "extensions": ["101"]})]
            items.append((b24.KIND_FINISH, {**ref, **fields, "show": False,
                                             "operator": "102" if ringall else "101",
                                             "talk_seconds": 30.0, "status": "answered"}))
            for kind, payload in items:
                await outbox.enqueue(conn, key, kind, payload, now)
                count += 1
    return count


def out_of_order(portal: Bitrix24Contract, calls: int) -> int:
    """Calls whose commands the portal ran in another order than queued."""
    order: dict[str, list[str]] = {}
    ext_of = {c.call_id: str(c.fields.get("EXTERNAL_CALL_ID")) for c in portal.calls.values()}
    for method, params in portal.telephony():
        key = str(params["EXTERNAL_CALL_ID"]) if method.endswith(".register") else ext_of.get(
            str(params.get("CALL_ID")), "?")
        order.setdefault(key, []).append(method.rsplit(".", 1)[1])
    bad = 0
    for n in range(1, calls + 1):
        expected = ["register", "show", "hide", "finish"] if n % 4 == 0 else ["register", "finish"]
        bad += order.get(f"bench:bench-{n}") != expected
    return bad


async def drain(calls: int, *, limited: bool) -> dict[str, Any]:
    portal = Bitrix24Contract(rate=PORTAL_RATE if limited else 1e9, limit=PORTAL_LIMIT if limited else 10**9)
    await portal.start()
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite+aiosqlite:///{Path(tmp) / 'bench.sqlite3'}")
        try:
            await migrate.upgrade(engine)
            tokens = portal.issue_tokens()
            async with engine.begin() as conn:
                await save_auth(conn, CONNECTOR, StoredAuth(access_token=tokens["access_token"],
                                                            refresh_token=tokens["refresh_token"]),
                                datetime.now(UTC))
            items = await backlog(engine, calls)
            settings = Bitrix24Settings(portal_url=portal.url, client_id=portal.client_id,
                                        client_secret=portal.client_secret, oauth_url=portal.oauth_url,
                                        requests_per_second=PORTAL_RATE if limited else 1e6,
                                        burst=10 if limited else 10**6)
            stop = asyncio.Event()
            async with aiohttp.ClientSession() as session:
                client = Bitrix24Client(settings, session, engine)
                sender = Bitrix24Sender(client, UserDirectory(client, 1), None, show_max_age=3600)
                policy = outbox.RetryPolicy(max_attempts=10, base_seconds=0.2, max_seconds=2.0)
                started = time.perf_counter()
                loop = asyncio.create_task(outbox.run_delivery_loop(
                    engine, None, policy, stop, poll_interval=0.05, send_many=sender.send_many,
                    limit=MAX_BATCH * 10))
                while True:
                    async with engine.connect() as conn:
                        left = await outbox.counts(conn)
                    if left["pending"] == 0:
                        break
                    await asyncio.sleep(0.05)
                elapsed = time.perf_counter() - started
                stop.set()
                await loop
            return {"calls": calls, "items": items, "seconds": elapsed, "limit_errors": portal.limit_errors,
                    "requests": portal.requests(), "out_of_order": out_of_order(portal, calls),
                    "dead": left["dead"], "batches": sender.batches, "burst_learnt": client.pacer.burst}
        finally:
            await engine.dispose()
            await portal.stop()


def run(quick: bool = False) -> list[dict[str, Any]]:
    calls = 200 if quick else CALLS
    reference = asyncio.run(drain(calls, limited=False))
    measured = asyncio.run(drain(calls, limited=True))
    ref_rate = reference["calls"] / reference["seconds"]
    rate = measured["calls"] / measured["seconds"]
    name = f"no limit, same {calls:,} calls"
    return [
        {"figure": f"backlog of {calls:,} ended calls ({measured['items']:,} items) at 2 req/s: drain rate",
         "value": round(rate, 1), "unit": "calls/s", "target": ">= 30 (2 req/s x 50 commands a batch)",
         "reference": round(ref_rate, 1), "reference_name": name},
        {"figure": "time to drain it", "value": round(measured["seconds"], 1), "unit": "s", "target": "-",
         "reference": round(reference["seconds"], 1), "reference_name": name},
        {"figure": "QUERY_LIMIT_EXCEEDED refusals caused", "value": measured["limit_errors"],
         "unit": "refusals", "target": "<= 1 (none after the first)",
         "reference": reference["limit_errors"], "reference_name": name},
        {"figure": "requests the portal took, past its burst of 5, per second",
         "value": round(max(0, measured["requests"] - measured["limit_errors"] - PORTAL_LIMIT)
                        / measured["seconds"], 2),
         "unit": f"req/s ({measured['requests']} requests, batch = 1)", "target": "<= 2",
         "reference": reference["requests"], "reference_name": f"requests, {name}"},
        {"figure": "calls whose requests arrived out of order", "value": measured["out_of_order"],
         "unit": "calls", "target": "0", "reference": reference["out_of_order"], "reference_name": name},
        {"figure": "dead letters", "value": measured["dead"], "unit": "items", "target": "0",
         "reference": reference["dead"], "reference_name": name},
        {"figure": "burst the client learnt from the portal (limit 5)", "value": measured["burst_learnt"],
         "unit": "requests", "target": "<= 5", "reference": None, "reference_name": ""},
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    for row in run(args.quick):
        print(json.dumps(row, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
