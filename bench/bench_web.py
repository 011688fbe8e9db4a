"""Web UI costs: what a session cookie adds to a request, and the server-side report's time.

Figures: p50/p99 of GET /ui/calls with a session (cookie lookup + page render) against an aiohttp
handler returning a constant on the same server; summary_report over a month of calls.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
from aiohttp import web

from pbx_bridge.config import Settings
from pbx_bridge.db import migrate
from pbx_bridge.db.engine import make_engine, make_sessionmaker
from pbx_bridge.db.schema import calls
from pbx_bridge.reports.summary import summary_report
from pbx_bridge.runtime import Runtime
from pbx_bridge.server.app import make_app
from pbx_bridge.web import users as store


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _constant(_request: web.Request) -> web.Response:
    return web.Response(text="ok")


def _row(figure: str, value: float, unit: str, target: str = "", reference: float | None = None,
         reference_name: str = "") -> dict[str, Any]:
    return {"figure": figure, "value": value, "unit": unit, "target": target,
            "reference": reference, "reference_name": reference_name}


async def _requests(base: str, n: int) -> list[dict[str, Any]]:
    rows = []
    results: dict[str, list[float]] = {}
    # unsafe=True: keep cookies from an IP-address host (the test server's 127.0.0.1).
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        signed = await http.post(base + "/ui/login",
                                 data={"username": "anna", "password": "bench-pass-1"})
        assert signed.url.path == "/ui/calls", signed.url
        for path in ("/bench/constant", "/ui/calls"):
            samples = []
            for _ in range(n):
                t0 = time.perf_counter()
                async with http.get(base + path) as resp:
                    await resp.read()
                    assert resp.status == 200 and resp.url.path == path, resp.url
                samples.append((time.perf_counter() - t0) * 1000)
            results[path] = samples
    ref50 = round(statistics.median(results["/bench/constant"]), 3)
    ref99 = round(_pct(results["/bench/constant"], 0.99), 3)
    page = results["/ui/calls"]
    rows.append(_row("GET /ui/calls with a session cookie, p50", round(statistics.median(page), 3),
                     "ms", "", ref50, "constant aiohttp handler p50"))
    rows.append(_row("GET /ui/calls with a session cookie, p99", round(_pct(page, 0.99), 3), "ms",
                     "≤ 50 ms", ref99, "constant aiohttp handler p99"))
    return rows


async def _report(engine: Any, count: int) -> dict[str, Any]:
    start = datetime(2026, 10, 1, tzinfo=UTC)
    now = datetime.now(UTC)
    step = 31 * 86400 / count
    batch = []
    for i in range(count):
        answered = i % 4 != 0
        batch.append({
            "pbx": "main", "linkedid": f"b{i}", "state": "ended", "direction": "inbound",
            "status": "answered" if answered else "no_answer", "missed": not answered,
            "customer_number": f"+7916{i:07d}", "did": f"+749511100{i % 7:02d}",
            "operator": f"1{i % 30:02d}" if answered else None,
            "operators_rung": [f"1{i % 30:02d}"], "transfers": [], "tags": [],
            "started_at": start + timedelta(seconds=i * step), "wait_seconds": float(i % 90),
            "talk_seconds": float(i % 300) if answered else 0.0, "updated_at": now,
        })
    async with engine.begin() as conn:
        for k in range(0, len(batch), 5000):
            await conn.execute(calls.insert(), batch[k:k + 5000])
    t0 = time.perf_counter()
    async with engine.connect() as conn:
        moscow = ZoneInfo("Europe/Moscow")
        report = await summary_report(conn, datetime(2026, 10, 1, tzinfo=moscow),
                                      datetime(2026, 11, 1, tzinfo=moscow), timezone="Europe/Moscow")
    elapsed = (time.perf_counter() - t0) * 1000
    return _row(f"summary report over {report.totals.calls} calls in 31 days (SQLite)",
                round(elapsed, 1), "ms", "≤ 2000 ms")


async def _run(quick: bool) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'bench.sqlite3'}"
        engine = make_engine(url)
        await migrate.upgrade(engine)
        settings = Settings()
        settings.database.url = url
        runtime = Runtime(settings=settings, engine=engine, sessions=make_sessionmaker(engine))
        async with engine.begin() as conn:
            await store.create_user(conn, username="anna", password="bench-pass-1", role="manager")
        app = make_app(runtime)
        app.router.add_get("/bench/constant", _constant)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        try:
            rows = await _requests(f"http://127.0.0.1:{runner.addresses[0][1]}", 300 if quick else 2000)
        finally:
            await runner.cleanup()
        rows.append(await _report(engine, 20_000 if quick else 100_000))
        await engine.dispose()
    return rows


def run(quick: bool = False) -> list[dict[str, Any]]:
    return asyncio.run(_run(quick))


if __name__ == "__main__":
    for found in run(quick="--quick" in sys.argv):
        ref = f"; {found['reference_name']}: {found['reference']}" if found["reference"] is not None else ""
        print(f"{found['figure']}: {found['value']} {found['unit']} (target {found['target'] or '-'}{ref})")
