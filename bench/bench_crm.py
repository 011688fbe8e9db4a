"""CRM benchmarks on 1,000,000 client cards (SQLite):

1. caller lookup (crm_sync.matching.match_number: normalization + the indexed query) p99, target
   <= 2 ms; reference: the bare SQL query on the same index, same connection, same run;
2. the routing endpoint (real HTTP, server in its own process) p99 at 200 requests/s, target
   <= 5 ms; reference: an aiohttp handler returning a constant, same load, same run.

Run: /work/venv/bin/python -m bench.bench_crm [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CARDS = 1_000_000
ROUTING_RATE = 200.0
TOKEN = "bench-token"


def _number(i: int) -> str:
    return f"+7916{i:07d}"


def build_database(path: Path, cards: int) -> float:
    """Migrate a fresh SQLite file and bulk-load `cards` cards (one phone each, 1% unparsed)."""
    from pbx_bridge.db import migrate
    from pbx_bridge.db.engine import make_engine

    started = time.perf_counter()

    async def up() -> None:
        engine = make_engine(f"sqlite+aiosqlite:///{path}")
        await migrate.upgrade(engine)
        await engine.dispose()

    asyncio.run(up())
    db = sqlite3.connect(path)
    db.execute("PRAGMA synchronous=OFF")
    db.execute("PRAGMA journal_mode=OFF")
    stamp = "2026-11-01 10:00:00.000000"
    rng = random.Random(7)
    exts = [str(e) for e in range(101, 160)]
    db.executemany(
        "INSERT INTO clients (id, name, name_key, responsible, tags, auto_created, created_at, updated_at, "
        "last_activity_at) VALUES (?, ?, ?, ?, '[]', 0, ?, ?, ?)",
        (
            (i, f"Client {i}", f"client {i}", rng.choice(exts), stamp, stamp, stamp)
            for i in range(1, cards + 1)
        ),
    )

    def phones() -> Any:
        for i in range(1, cards + 1):
            number = _number(i)
            if i % 100 == 0:  # stored as typed, did not parse: matched on the last 10 digits
                yield (i, None, "00 " + number[1:], number[-10:])
            else:
                yield (i, number, number, number[-10:])

    db.executemany("INSERT INTO client_phones (client_id, e164, raw, suffix) VALUES (?, ?, ?, ?)", phones())
    db.commit()
    db.execute("ANALYZE")
    db.close()
    return time.perf_counter() - started


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def bench_lookup(path: Path, cards: int, samples: int) -> dict[str, list[float]]:
    """Latencies (ms) of: the lookup the routing endpoint and the screen pop use (CallerLookup),
    the library's async match_number, and the bare SQL on the same index (sqlite3, in place)."""
    from crm_sync.matching import MatchSettings, match_number
    from pbx_bridge.clients.caller_lookup import CallerLookup
    from pbx_bridge.db.engine import make_engine

    engine = make_engine(f"sqlite+aiosqlite:///{path}")
    settings = MatchSettings()
    lookup = CallerLookup(engine, settings)
    rng = random.Random(11)
    # Callers as a PBX presents them: 8..., 7... without +, +7...; 10% unknown numbers.
    callers = []
    for _ in range(samples):
        i = rng.randint(1, cards) if rng.random() < 0.9 else cards + rng.randint(1, 1_000_000)
        digits = _number(i)[1:]
        callers.append(rng.choice(["+" + digits, digits, "8" + digits[1:]]))
    out: dict[str, list[float]] = {"lookup": [], "async": [], "bare": [], "found": []}
    bare = sqlite3.connect(path)
    bare_sql = "SELECT client_id FROM client_phones WHERE e164 = ? LIMIT 11"
    async with engine.connect() as conn:
        for caller in callers[:200]:  # warm caches
            await lookup.match(caller)
            await match_number(conn, caller, settings)
            bare.execute(bare_sql, ("+7" + caller[-10:],)).fetchall()
        for caller in callers:
            t0 = time.perf_counter()
            m = await lookup.match(caller)
            out["lookup"].append((time.perf_counter() - t0) * 1000)
            out["found"].append(float(m.client is not None))
            t0 = time.perf_counter()
            await match_number(conn, caller, settings)
            out["async"].append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            bare.execute(bare_sql, ("+7" + caller[-10:],)).fetchall()
            out["bare"].append((time.perf_counter() - t0) * 1000)
    bare.close()
    lookup.close()
    await engine.dispose()
    return out


def serve_routing(path: str, port: int, constant: bool) -> None:
    """Server process: the real app (routing endpoint) or the constant reference handler."""
    from aiohttp import web

    async def main() -> None:
        if constant:
            app = web.Application()

            async def const(_request: web.Request) -> web.Response:
                return web.Response(text="101", content_type="text/plain")

            app.router.add_get("/api/v1/routing/responsible", const)
        else:
            from datetime import UTC, datetime

            from pbx_bridge.auth.schema import api_tokens
            from pbx_bridge.auth.tokens import hash_token
            from pbx_bridge.config import Settings
            from pbx_bridge.db.engine import make_engine, make_sessionmaker
            from pbx_bridge.runtime import Runtime
            from pbx_bridge.server.app import make_app

            settings = Settings()
            settings.database.url = f"sqlite+aiosqlite:///{path}"
            engine = make_engine(settings.database_url)
            app = make_app(Runtime(settings=settings, engine=engine, sessions=make_sessionmaker(engine)))
            # A real crm-role token row (the fixed bench token, hashed as `tokens create` does):
            # the request goes through the real token middleware.
            async with engine.begin() as conn:
                await conn.execute(api_tokens.delete().where(api_tokens.c.name == "bench"))
                await conn.execute(api_tokens.insert().values(
                    name="bench", role="crm", token_hash=hash_token(TOKEN), prefix=TOKEN[:10],
                    created_at=datetime.now(UTC)))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        # As `serve` does: objects alive after start-up are never garbage, so keep them out of
        # the collector's full passes (a full pass over them pauses the loop for tens of ms).
        gc.freeze()
        print("ready", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def load(port: int, numbers: list[str], rate: float, seconds: float) -> tuple[list[float], int]:
    """Open-loop load: one request every 1/rate s whatever the answers do; latency per request."""
    import aiohttp

    latencies: list[float] = []
    errors = 0
    url = f"http://127.0.0.1:{port}/api/v1/routing/responsible"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession() as session:

        async def warm(number: str) -> None:
            async with session.get(url, params={"number": number}, headers=headers) as r:
                await r.read()

        # Warm up as a running server would be: connection pools filled (concurrent requests),
        # caches hot. Not measured.
        for k in range(10):
            await asyncio.gather(*(warm(n) for n in numbers[k * 20 : k * 20 + 20]))

        async def one(number: str) -> None:
            nonlocal errors
            t0 = time.perf_counter()
            async with session.get(url, params={"number": number}, headers=headers) as resp:
                await resp.read()
                if resp.status != 200:
                    errors += 1
            latencies.append((time.perf_counter() - t0) * 1000)

        tasks = []
        start = time.perf_counter()
        total = int(rate * seconds)
        for k in range(total):
            delay = start + k / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(numbers[k % len(numbers)])))
        await asyncio.gather(*tasks)
    return latencies, errors


def bench_routing(path: Path, cards: int, seconds: float, constant: bool) -> tuple[list[float], int]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.bench_crm", "--serve", str(path), str(port)]
        + (["--constant"] if constant else []),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError("benchmark server did not start")
        rng = random.Random(5)
        numbers = [_number(rng.randint(1, cards))[1:] for _ in range(2000)]
        return asyncio.run(load(port, numbers, ROUTING_RATE, seconds))
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def bench_import(path: Path, rows: int) -> float:
    """Seconds to import a CSV of `rows` new cards (one phone, one e-mail each) into an empty DB."""
    from datetime import UTC, datetime

    from crm_sync.csv_io import import_csv
    from crm_sync.matching import MatchSettings
    from pbx_bridge.db import migrate
    from pbx_bridge.db.engine import make_engine

    lines = ["name;phone;email"] + [f"Client {i};8 916 {i:07d};c{i}@example.com" for i in range(rows)]
    data = ("\n".join(lines) + "\n").encode()

    async def go() -> float:
        engine = make_engine(f"sqlite+aiosqlite:///{path}")
        await migrate.upgrade(engine)
        started = time.perf_counter()
        report = await import_csv(engine, data, MatchSettings(), datetime.now(UTC))
        elapsed = time.perf_counter() - started
        await engine.dispose()
        assert report.created == rows, report
        return elapsed

    return asyncio.run(go())


def run(quick: bool = False) -> list[dict[str, Any]]:
    cards = 100_000 if quick else CARDS
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-crm-") as tmp:
        path = Path(tmp) / "crm.sqlite3"
        load_seconds = build_database(path, cards)
        rows.append(
            {
                "figure": f"generate {cards:,} cards (bulk insert + indexes)",
                "value": round(load_seconds, 1),
                "unit": "s",
                "target": "-",
                "reference": None,
                "reference_name": "",
            }
        )
        res = asyncio.run(bench_lookup(path, cards, 2000 if quick else 20000))
        lib, bare = res["lookup"], res["bare"]
        rows.append(
            {
                "figure": f"caller lookup p99 at {cards:,} cards (routing / screen-pop path)",
                "value": round(_pct(lib, 99), 3),
                "unit": "ms",
                "target": "<= 2 ms",
                "reference": round(_pct(bare, 99), 3),
                "reference_name": "bare SQL on the same index, sqlite3 (p99)",
            }
        )
        rows.append(
            {
                "figure": "caller lookup p50 (routing / screen-pop path)",
                "value": round(statistics.median(lib), 3),
                "unit": "ms",
                "target": "-",
                "reference": round(statistics.median(bare), 3),
                "reference_name": "bare SQL (p50)",
            }
        )
        rows.append(
            {
                "figure": "caller lookup p99, library async match_number (aiosqlite)",
                "value": round(_pct(res["async"], 99), 3),
                "unit": "ms",
                "target": "-",
                "reference": round(statistics.median(res["async"]), 3),
                "reference_name": "its p50",
            }
        )
        rows.append(
            {
                "figure": "lookups that found a card",
                "value": round(100 * sum(res["found"]) / len(lib), 1),
                "unit": "%",
                "target": "~90 (10% unknown callers)",
                "reference": None,
                "reference_name": "",
            }
        )
        seconds = 3.0 if quick else 10.0
        lat, errors = bench_routing(path, cards, seconds, constant=False)
        ref, ref_errors = bench_routing(path, cards, seconds, constant=True)
        rows.append(
            {
                "figure": f"routing endpoint p99 at {ROUTING_RATE:.0f} req/s "
                f"({len(lat)} requests, {errors} errors)",
                "value": round(_pct(lat, 99), 3),
                "unit": "ms",
                "target": "<= 5 ms",
                "reference": round(_pct(ref, 99), 3),
                "reference_name": f"aiohttp handler returning a constant (p99, {ref_errors} errors)",
            }
        )
        rows.append(
            {
                "figure": "routing endpoint p50",
                "value": round(statistics.median(lat), 3),
                "unit": "ms",
                "target": "-",
                "reference": round(statistics.median(ref), 3),
                "reference_name": "constant handler (p50)",
            }
        )
        import_rows = 20_000 if quick else 100_000
        seconds_import = bench_import(Path(tmp) / "import.sqlite3", import_rows)
        rows.append(
            {
                "figure": f"CSV import of {import_rows:,} new cards",
                "value": round(import_rows / seconds_import),
                "unit": "rows/s",
                "target": "-",
                "reference": None,
                "reference_name": "",
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--serve", nargs=2, metavar=("DB", "PORT"))
    parser.add_argument("--constant", action="store_true")
    args = parser.parse_args(argv)
    if args.serve:
        serve_routing(args.serve[0], int(args.serve[1]), args.constant)
        return 0
    for row in run(args.quick):
        print(json.dumps(row, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
