"""The endpoint that froze the server (issue 18, point 1): `/healthz` p99 while 10 clients post,
back to back, the largest card the request caps allow (50 tags of 64 characters, 20 phones, 20
e-mails of 255, a 100,000-character note, name and company of 255: about 118 KB of JSON each).
Target: <= 50 ms. Reference, same run: `/healthz` p99 with the server idle. On SQLite, then on a
PostgreSQL database made for the run (127.0.0.1:5432, when reachable).

The bridge runs as `serve` assembles it (SQLite, no PBX) in this process; the load and the probe
run in a child process (`--client`), so the client's own work never delays the server's loop.
Times are CLOCK_MONOTONIC (time.perf_counter).

    /work/venv/bin/python -m bench.bench_card_flood [--quick]
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CONCURRENT = 10
PROBE_INTERVAL = 0.01  # one /healthz every 10 ms
ROOT = str(Path(__file__).resolve().parent.parent)
PG = "postgresql://postgres@127.0.0.1:5432"


def largest_card(seq: int, rng: random.Random) -> dict[str, Any]:
    from pbx_bridge.clients.schemas import (
        MAX_COMPANY_LENGTH,
        MAX_EMAIL_LENGTH,
        MAX_EMAILS,
        MAX_NOTES_LENGTH,
        MAX_PHONES,
        MAX_SOURCE_LENGTH,
        MAX_TAG_LENGTH,
        MAX_TAGS,
    )

    domain = "@example.com"
    return {
        "name": f"{seq:08d} " + "N" * (255 - 9), "company": "C" * MAX_COMPANY_LENGTH,
        "source": "S" * MAX_SOURCE_LENGTH, "notes": "x" * MAX_NOTES_LENGTH,
        "tags": [f"{seq:08d}-{i:02d}".ljust(MAX_TAG_LENGTH, "t") for i in range(MAX_TAGS)],
        "phones": [f"+7916{rng.randrange(10**7):07d}" for _ in range(MAX_PHONES)],
        "emails": [f"{seq:08d}{i:02d}".ljust(MAX_EMAIL_LENGTH - len(domain), "e") + domain
                   for i in range(MAX_EMAILS)],
    }


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))] if ordered else float("nan")


# --- the child process: the probe and the load ------------------------------------------------


async def _probe(http: Any, base: str, samples: int) -> list[float]:
    out: list[float] = []
    while len(out) < samples:
        started = time.perf_counter()
        async with http.get(base + "/healthz") as resp:
            await resp.read()
            assert resp.status == 200
        out.append((time.perf_counter() - started) * 1000)
        await asyncio.sleep(max(0.0, PROBE_INTERVAL - (time.perf_counter() - started)))
    return out


async def _poster(http: Any, base: str, token: str, worker: int, stop: asyncio.Event,
                  latencies: list[float], bodies: list[int]) -> None:
    rng = random.Random(worker)
    seq = worker * 1_000_000
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    while not stop.is_set():
        seq += 1
        body = json.dumps(largest_card(seq, rng)).encode()
        started = time.perf_counter()
        async with http.post(base + "/api/v1/clients", data=body, headers=headers) as resp:
            await resp.read()
            assert resp.status == 201, resp.status
        latencies.append((time.perf_counter() - started) * 1000)
        bodies.append(len(body))


async def client_main(base: str, token: str, samples: int) -> dict[str, Any]:
    import aiohttp

    connector = aiohttp.TCPConnector(limit=CONCURRENT + 2)
    async with aiohttp.ClientSession(connector=connector) as http:
        await _probe(http, base, 20)  # warm-up
        idle = await _probe(http, base, samples)
        stop = asyncio.Event()
        latencies: list[float] = []
        bodies: list[int] = []
        posters = [asyncio.create_task(_poster(http, base, token, w, stop, latencies, bodies))
                   for w in range(CONCURRENT)]
        await asyncio.sleep(1.0)  # every poster under way before the probe starts
        started = time.perf_counter()
        loaded = await _probe(http, base, samples)
        elapsed = time.perf_counter() - started
        stop.set()
        await asyncio.gather(*posters)
    return {"idle": idle, "loaded": loaded, "post_ms": latencies, "body_bytes": max(bodies),
            "posts_per_s": len(latencies) / (elapsed + 1.0)}


# --- the parent: the bridge ---------------------------------------------------------------------


async def _measure(quick: bool, database_url: str | None = None) -> dict[str, Any]:
    from pbx_bridge.assembly import assemble
    from pbx_bridge.auth.tokens import create_token
    from pbx_bridge.config import Settings
    from pbx_bridge.db import migrate
    from pbx_bridge.db.engine import make_engine

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings()
        settings.server.data_dir = str(Path(tmp) / "var")
        Path(settings.server.data_dir).mkdir()  # noqa: ASYNC240 - set-up, not measured
        settings.server.port = 0
        settings.simulator.enabled = False  # no PBX: the HTTP side alone
        settings.transcription.in_process = False
        settings.api.token_cache_seconds = 3600.0
        if database_url:
            settings.database.url = database_url
        engine = make_engine(settings.database_url)
        await migrate.upgrade(engine)
        async with engine.begin() as conn:
            _info, token = await create_token(conn, name="bench", role="crm")
        bridge = assemble(settings, engine)
        await bridge.start()
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.bench_card_flood", "--client",
                f"http://127.0.0.1:{bridge.http_port}", token, str(300 if quick else 2000),
                cwd=ROOT, stdout=asyncio.subprocess.PIPE)
            out, _ = await proc.communicate()
            assert proc.returncode == 0, "the load client failed"
        finally:
            await bridge.stop()
            await engine.dispose()
    result: dict[str, Any] = json.loads(out)
    return result


async def _measure_pg(quick: bool) -> dict[str, Any] | None:
    """The same on a PostgreSQL database made for the run (None when it cannot be reached)."""
    import os

    import asyncpg

    name = f"bench_card_flood_{os.getpid()}"
    try:
        admin = await asyncpg.connect(f"{PG}/postgres")
    except OSError:
        return None
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        return await _measure(quick, f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}")
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def _rows(result: dict[str, Any], database: str) -> list[dict[str, Any]]:
    idle, loaded, posts = result["idle"], result["loaded"], result["post_ms"]
    print(f"{database}: {len(loaded)} probes under load, {len(posts)} cards of {result['body_bytes']} "
          f"bytes ({result['posts_per_s']:.1f}/s)", file=sys.stderr)
    return [
        {"figure": f"/healthz p99 while {CONCURRENT} clients POST the largest card the caps allow "
                   f"({result['body_bytes'] // 1000} KB), {database}",
         "value": round(_pct(loaded, 99), 3), "unit": "ms", "target": "≤ 50 ms",
         "reference": round(_pct(idle, 99), 3), "reference_name": "/healthz p99, server idle"},
        {"figure": f"POST /api/v1/clients of the largest card, p99 with {CONCURRENT} concurrent, "
                   f"{database}",
         "value": round(_pct(posts, 99), 3), "unit": "ms", "target": "-",
         "reference": round(_pct(posts, 50), 3), "reference_name": "p50"},
        {"figure": f"largest cards created per second, {database}",
         "value": round(result["posts_per_s"], 1), "unit": "/s", "target": "-", "reference": None,
         "reference_name": ""},
    ]


def run(quick: bool = False) -> list[dict[str, Any]]:
    rows = _rows(asyncio.run(_measure(quick)), "SQLite")
    pg = asyncio.run(_measure_pg(quick))
    if pg is None:
        rows.append({"figure": "PostgreSQL not reachable: not measured", "value": 0, "unit": "-",
                     "target": "-", "reference": None, "reference_name": ""})
    else:
        rows += _rows(pg, "PostgreSQL")
    return rows


if __name__ == "__main__":
    if "--client" in sys.argv:
        base, token, samples = sys.argv[sys.argv.index("--client") + 1:][:3]
        print(json.dumps(asyncio.run(client_main(base, token, int(samples)))))
    else:
        for row in run(quick="--quick" in sys.argv):
            print(row)
