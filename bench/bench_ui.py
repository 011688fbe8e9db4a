"""The operator's day and the manager's desk (issue 14): three figures, each with its reference
measured in the same run.

1. Partial-number search (any 4+ consecutive digits) p99 over 1,000,000 calls (the journal) and
   1,000,000 cards, through the code the API runs (list_calls / find_cards), on SQLite (FTS5
   trigram) and on PostgreSQL (pg_trgm) when it answers. Reference: the exact E.164 lookup.
   The digits searched are 4-7 consecutive digits of an existing number's subscriber part (what
   people type); the worst case, a prefix nearly every number shares ("9160"), is its own row.
2. Export of 100,000 calls from a `pbx-bridge serve` process (CSV and XLSX): wall time and the
   growth of the server's peak RSS (sampled every 10 ms) over its RSS before the request; for
   XLSX also the peak RSS of the writer process the server starts (pbx_bridge.calls.xlsx_worker).
   Reference: the same calls read through GET /api/v1/calls, pages of 500.
3. Screen pop under load: the whole stack (serve on PostgreSQL, AMI from the simulator in this
   process, 100 WebSocket clients in a third process), 20 calls/s: p99 from the simulator writing
   the ring (DialBegin) to call.ringing at a client. Reference: the same stack unloaded (one
   call at a time, 100 clients).

    python -m bench.bench_ui [--quick] [search] [export] [pop]
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import psutil

from crm_sync.cards import CardQuery, find_cards
from crm_sync.matching import MatchSettings
from crm_sync.phone_search import digit_patterns
from pbx_bridge.auth.tokens import create_token
from pbx_bridge.calls.query import CallFilter, list_calls
from pbx_bridge.db import migrate
from pbx_bridge.db.engine import make_engine

ROOT = Path(__file__).resolve().parent.parent
PG = "postgresql://postgres@127.0.0.1:5432"
Row = dict[str, Any]
STAMP = "%Y-%m-%d %H:%M:%S.%f"


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def row(figure: str, value: float, unit: str, target: str = "-", reference: float | None = None,
        reference_name: str = "") -> Row:
    out = {"figure": figure, "value": round(value, 3), "unit": unit, "target": target,
           "reference": None if reference is None else round(reference, 3), "reference_name": reference_name}
    print(f"   {figure}: {out['value']} {unit} (target {target}; {reference_name} {out['reference']})",
          file=sys.stderr, flush=True)
    return out


def _numbers(count: int, seed: int = 11) -> list[str]:
    rng = random.Random(seed)
    return [("+79" + "".join(rng.choices("0123456789", k=9))) if rng.random() < 0.6
            else ("+749" + rng.choice("59") + "".join(rng.choices("0123456789", k=7))) for _ in range(count)]


def _call_rows(numbers: list[str]) -> Any:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    step = 365 * 86400 / len(numbers)
    for i, number in enumerate(numbers):
        at = (start + timedelta(seconds=i * step)).strftime(STAMP)
        answered = i % 4 != 0
        yield ("main", f"b{i}", "ended", "inbound", "answered" if answered else "no_answer", not answered,
               number, f"1{i % 30:02d}" if answered else None, f'["1{i % 30:02d}"]', at, at, 5.0, 30.0)


def load_sqlite(path: Path, numbers: list[str], cards: int) -> None:
    """Bulk set-up of a migrated file: `cards` cards (one phone each) and the calls. The FTS5
    insert triggers are dropped for the load and the indexes rebuilt once after it (with a 1 GiB
    cache), then put back: a benchmark's set-up, not the pipeline's write path, which
    write_cost() measures on its own."""
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=MEMORY")
    db.execute("PRAGMA synchronous=OFF")
    db.execute("PRAGMA cache_size=-1048576")
    triggers = db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' "
                          "AND name LIKE '%_fts_insert' AND name NOT LIKE 'transcripts%'").fetchall()
    for name, _sql in triggers:
        db.execute(f"DROP TRIGGER {name}")
    stamp = "2026-11-01 10:00:00.000000"
    db.executemany("INSERT INTO clients (id, name, name_key, tags, auto_created, created_at, updated_at, "
                   "last_activity_at) VALUES (?, ?, ?, '[]', 0, ?, ?, ?)",
                   ((i, f"Client {i}", f"client {i}", stamp, stamp, stamp) for i in range(1, cards + 1)))
    db.executemany("INSERT INTO client_phones (client_id, e164, raw, suffix) VALUES (?, ?, ?, ?)",
                   ((i, _card_number(i), _card_number(i), _card_number(i)[-10:])
                    for i in range(1, cards + 1)))
    db.executemany(
        "INSERT INTO calls (pbx, linkedid, state, direction, status, missed, customer_number, operator, "
        "operators_rung, transfers, tags, started_at, updated_at, wait_seconds, talk_seconds) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, '[]', '[]', ?, ?, ?, ?)", _call_rows(numbers))
    for table in ("calls_number_fts", "client_phones_fts"):
        db.execute(f"INSERT INTO {table}({table}) VALUES ('rebuild')")
    for _name, sql in triggers:
        db.execute(sql)
    db.commit()
    db.execute("ANALYZE")
    db.close()


def write_cost(path: Path, count: int = 2000, batch: int = 20) -> tuple[float, float]:
    """µs per new call written as the pipeline writes them (transactions of `batch`, the bridge's
    64 MiB cache), with the number index's trigger, then without it (the reference)."""
    out = []
    for with_index in (True, False):
        db = sqlite3.connect(path)
        db.execute("PRAGMA cache_size=-65536")
        db.execute("PRAGMA synchronous=NORMAL")
        if not with_index:
            db.execute("DROP TRIGGER calls_number_fts_insert")
        rows = list(_call_rows(_numbers(count, seed=99 + with_index)))
        rows = [(r[0], f"w{with_index}-{r[1]}", *r[2:]) for r in rows]
        t0 = time.perf_counter()
        for i in range(0, count, batch):
            db.executemany(
                "INSERT INTO calls (pbx, linkedid, state, direction, status, missed, customer_number, "
                "operator, operators_rung, transfers, tags, started_at, updated_at, wait_seconds, "
                "talk_seconds) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, '[]', '[]', ?, ?, ?, ?)",
                rows[i:i + batch])
            db.commit()
        out.append((time.perf_counter() - t0) / count * 1e6)
        db.close()
    return out[0], out[1]


def load_calls_sqlite(path: Path, numbers: list[str]) -> None:
    """Calls only (the export benchmark's database)."""
    load_sqlite(path, numbers, 0)


def _card_number(i: int) -> str:
    """Card i's number: random-looking like real customers' (a seeded permutation), so a few
    digits match as many cards as they would in life; sequential numbers would share prefixes."""
    numbers = _card_numbers()
    return numbers[i % len(numbers)]


@functools.cache
def _card_numbers() -> list[str]:
    return _numbers(1_000_001, seed=23)


async def load_pg(url: str, numbers: list[str], cards: int) -> None:
    conn = await asyncpg.connect(url.replace("+asyncpg", ""))
    try:
        records = [(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], "[]", "[]",
                    datetime.strptime(r[9], STAMP).replace(tzinfo=UTC),
                    datetime.strptime(r[10], STAMP).replace(tzinfo=UTC), r[11], r[12])
                   for r in _call_rows(numbers)]
        await conn.copy_records_to_table(
            "calls", records=records,
            columns=["pbx", "linkedid", "state", "direction", "status", "missed", "customer_number",
                     "operator", "operators_rung", "transfers", "tags", "started_at", "updated_at",
                     "wait_seconds", "talk_seconds"])
        stamp = datetime(2026, 11, 1, tzinfo=UTC)
        await conn.copy_records_to_table(
            "clients", records=[(i, f"Client {i}", f"client {i}", "[]", False, stamp, stamp, stamp)
                                for i in range(1, cards + 1)],
            columns=["id", "name", "name_key", "tags", "auto_created", "created_at", "updated_at",
                     "last_activity_at"])
        await conn.copy_records_to_table(
            "client_phones", records=[(i, _card_number(i), _card_number(i), _card_number(i)[-10:])
                                      for i in range(1, cards + 1)],
            columns=["client_id", "e164", "raw", "suffix"])
        # What autovacuum does after a bulk load: statistics, and the GIN indexes' pending lists
        # merged into the index proper.
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()


def _partials(numbers: list[str], count: int, seed: int = 5) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        subscriber = rng.choice(numbers)[-7:]
        length = rng.randint(4, 7)
        begin = rng.randint(0, 7 - length)
        out.append(subscriber[begin:begin + length])
    return out


async def _timed(fn: Any, args: list[Any]) -> list[float]:
    samples = []
    for arg in args:
        t0 = time.perf_counter()
        await fn(arg)
        samples.append((time.perf_counter() - t0) * 1000)
    return samples


async def search_figures(url: str, label: str, call_numbers: list[str], cards: int, n: int) -> list[Row]:
    engine = make_engine(url)
    settings = MatchSettings()
    partials = _partials(call_numbers, n)
    card_partials = _partials([_card_number(random.Random(i).randint(1, cards)) for i in range(n)], n)
    exact = [random.Random(i).choice(call_numbers) for i in range(n)]
    exact_cards = [_card_number(random.Random(i + 7).randint(1, cards)) for i in range(n)]
    rows: list[Row] = []
    async with engine.connect() as conn:
        async def calls_partial(digits: str) -> None:
            await list_calls(conn, CallFilter(number_digits=digit_patterns(digits, "RU")), 50)

        async def calls_exact(e164: str) -> None:
            await list_calls(conn, CallFilter(number=e164), 50)

        async def cards_query(text: str) -> None:
            await find_cards(conn, CardQuery(text=text, limit=50), settings)

        for fn, args in ((calls_partial, partials[:20]), (cards_query, card_partials[:20])):
            await _timed(fn, args)  # warm the caches
        part = await _timed(calls_partial, partials)
        ref = await _timed(calls_exact, exact)
        rows.append(row(f"{label}: journal, partial number (4-7 digits) p99, {len(call_numbers):,} calls",
                        _pct(part, 99), "ms", "<= 50 ms", _pct(ref, 99), "exact E.164 lookup p99"))
        prefix = await _timed(calls_partial, ["9160", "4959", "7916", "9031"])
        rows.append(row(f"{label}: journal, prefixes most numbers share ('9160', '4959', '7916'...), max",
                        max(prefix), "ms", "-", _pct(ref, 50), "exact E.164 lookup p50"))
        part = await _timed(cards_query, card_partials)
        ref = await _timed(cards_query, exact_cards)
        rows.append(row(f"{label}: cards, partial number (4-7 digits) p99 over {cards:,} cards",
                        _pct(part, 99), "ms", "<= 50 ms", _pct(ref, 99), "exact E.164 lookup p99"))
    await engine.dispose()
    return rows


async def bench_search(quick: bool) -> list[Row]:
    size = 100_000 if quick else 1_000_000
    n = 200 if quick else 500
    numbers = _numbers(size)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-ui-") as tmp:
        path = Path(tmp) / "search.sqlite3"
        t0 = time.perf_counter()
        engine = make_engine(f"sqlite+aiosqlite:///{path}")
        await migrate.upgrade(engine)
        await engine.dispose()
        await asyncio.to_thread(load_sqlite, path, numbers, size)
        rows.append(row(f"SQLite set-up: {size:,} cards and {size:,} calls, bulk, indexes rebuilt once",
                        time.perf_counter() - t0, "s"))
        rows.append(row("SQLite database size with the FTS5 trigram indexes", path.stat().st_size / 2**20,
                        "MB"))
        rows += await search_figures(f"sqlite+aiosqlite:///{path}", "SQLite FTS5 trigram", numbers, size, n)
        with_index, without = await asyncio.to_thread(write_cost, path)
        rows.append(row(f"SQLite: writing a new call at {size:,} calls (transactions of 20, 64 MiB cache)",
                        with_index, "µs/call", "-", without, "without the number-search trigger"))
    name = f"bench_ui_{os.getpid()}"
    try:
        admin = await asyncpg.connect(f"{PG}/postgres")
    except OSError as exc:
        rows.append(row(f"PostgreSQL not reachable ({exc}): pg_trgm not measured", 0, "-"))
        return rows
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
        engine = make_engine(url)
        await migrate.upgrade(engine)
        await engine.dispose()
        t0 = time.perf_counter()
        await load_pg(url, numbers, size)
        rows.append(row(f"PostgreSQL set-up: {size:,} cards and {size:,} calls with pg_trgm GIN indexes",
                        time.perf_counter() - t0, "s"))
        rows += await search_figures(url, "PostgreSQL pg_trgm", numbers, size, n)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    return rows


# --- 2. export -----------------------------------------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def _download(url: str, token: str, proc: psutil.Process) -> tuple[float, int, int, int]:
    """Seconds, bytes, the server's peak RSS growth while it answered, and the peak RSS of its
    child processes (the XLSX writer runs as one)."""
    base = proc.memory_info().rss
    peak = base
    children_peak = 0
    done = asyncio.Event()

    async def sample() -> None:
        nonlocal peak, children_peak
        while not done.is_set():
            peak = max(peak, proc.memory_info().rss)
            children = 0
            for child in proc.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    children += child.memory_info().rss
            children_peak = max(children_peak, children)
            await asyncio.sleep(0.01)

    sampler = asyncio.create_task(sample())
    t0 = time.perf_counter()
    size = 0
    async with aiohttp.ClientSession() as http, \
            http.get(url, headers={"Authorization": f"Bearer {token}"}) as resp:
        assert resp.status == 200, (resp.status, await resp.text())
        async for chunk in resp.content.iter_chunked(1 << 16):
            size += len(chunk)
    elapsed = time.perf_counter() - t0
    done.set()
    await sampler
    return elapsed, size, peak - base, children_peak


async def bench_export(quick: bool) -> list[Row]:
    count = 20_000 if quick else 100_000
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-ui-export-") as tmp:
        path = Path(tmp) / "export.sqlite3"
        url = f"sqlite+aiosqlite:///{path}"
        engine = make_engine(url)
        await migrate.upgrade(engine)
        async with engine.begin() as conn:
            _info, token = await create_token(conn, name="bench", role="manager")
        await engine.dispose()
        await asyncio.to_thread(load_calls_sqlite, path, _numbers(count))
        port = _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("PBX_BRIDGE_")}
        env.update(PBX_BRIDGE_SERVER__PORT=str(port), PBX_BRIDGE_SERVER__DATA_DIR=tmp,
                   PBX_BRIDGE_DATABASE__URL=url, PBX_BRIDGE_SIMULATOR__CALLS_PER_SECOND="0",
                   PBX_BRIDGE_SIMULATOR__PORT="0", PBX_BRIDGE_TRANSCRIPTION__IN_PROCESS="false",
                   PBX_BRIDGE_LOGGING__LEVEL="WARNING", PYTHONPATH=str(ROOT))
        log = (Path(tmp) / "serve.log").open("wb")
        server = subprocess.Popen([sys.executable, "-m", "pbx_bridge", "serve"], cwd=ROOT, env=env,  # noqa: ASYNC220 - set-up
                                  stdout=log, stderr=subprocess.STDOUT)
        try:
            base = f"http://127.0.0.1:{port}"
            async with aiohttp.ClientSession() as http:
                for _ in range(300):
                    with contextlib.suppress(aiohttp.ClientError):
                        async with http.get(base + "/healthz") as resp:
                            if resp.status == 200:
                                break
                    await asyncio.sleep(0.1)
            proc = psutil.Process(server.pid)
            await asyncio.sleep(1.0)
            # Reference: the same calls through the journal's list endpoint, pages of 500.
            t0 = time.perf_counter()
            cursor = None
            seen = 0
            async with aiohttp.ClientSession() as http:
                while True:
                    params = {"limit": "500", **({"cursor": cursor} if cursor else {})}
                    async with http.get(base + "/api/v1/calls", params=params,
                                        headers={"Authorization": f"Bearer {token}"}) as resp:
                        page = await resp.json()
                    seen += len(page["items"])
                    cursor = page["next_cursor"]
                    if not cursor:
                        break
            reference = time.perf_counter() - t0
            assert seen == count, seen
            for fmt in ("csv", "xlsx"):
                seconds, size, growth, children = await _download(
                    f"{base}/api/v1/calls/export?format={fmt}&lang=ru", token, proc)
                rows.append(row(f"export of {count:,} calls as {fmt.upper()} ({size / 2**20:.1f} MB): time",
                                seconds, "s", "<= 5 s", reference,
                                f"GET /api/v1/calls pages of 500, {seen:,} calls"))
                rows.append(row(f"export of {count:,} calls as {fmt.upper()}: server peak RSS growth",
                                growth / 2**20, "MB", "<= 50 MB", proc.memory_info().rss / 2**20,
                                "server RSS after"))
                if fmt == "xlsx":
                    rows.append(row(f"export of {count:,} calls as XLSX: peak RSS of the writer process "
                                    "(server + writer growth must stay <= 50 MB)", children / 2**20, "MB",
                                    f"<= {50 - growth / 2**20:.1f} MB"))
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
            log.close()
    return rows


# --- 3. screen pop under load -------------------------------------------------------------------


async def bench_pop(quick: bool) -> list[Row]:
    from bench.bench_soak import Soak
    from bench.bench_soak import _pct as soak_pct

    loaded_calls = 300 if quick else 1200
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-ui-pop-") as tmp:
        soak = Soak(Path(tmp), quick)
        await soak.setup()
        try:
            offered: dict[str, tuple[float, float]] = {}  # label -> (calls/s offered, load after)

            async def measure(calls: int, rate: float, label: str) -> list[float]:
                out = Path(tmp) / f"clients-{label}.json"
                ws_url = (f"ws://127.0.0.1:{soak.http_port}/api/v1/events?access_token={soak.token}"
                          "&types=call.ringing")
                clients = subprocess.Popen([sys.executable, "-m", "bench.bench_soak",  # noqa: ASYNC220
                                            "--clients", ws_url, "100", str(out)], cwd=ROOT)
                await asyncio.sleep(3.0)
                soak.rate = rate
                first = len(soak.sim.added_at)
                truth = await soak.generate(calls)
                added = soak.sim.added_at[first:]
                offered[label] = ((len(added) - 1) / max(added[-1] - added[0], 1e-9), os.getloadavg()[0])
                await asyncio.sleep(2.0)
                clients.send_signal(signal.SIGTERM)
                await asyncio.to_thread(clients.wait, 60)
                result = json.loads(out.read_text())
                return [when - soak.sim.ring_sent[k] for k, whens in result["ringing"].items()
                        if k in truth and k in soak.sim.ring_sent for when in whens]

            unloaded = await measure(20 if quick else 40, 0.5, "unloaded")
            loaded = await measure(loaded_calls, 20.0, "loaded")
        finally:
            await soak.teardown()
    rows.append(row(f"screen pop p99 at 20 calls/s through the whole stack, 100 WebSockets "
                    f"({len(loaded)} deliveries; PostgreSQL, simulator, clients and bridge on 2 cores)",
                    soak_pct(loaded, 0.99) * 1000, "ms", "<= 50 ms", soak_pct(unloaded, 0.99) * 1000,
                    f"unloaded p99 (one call at a time, {len(unloaded)} deliveries)"))
    rows.append(row("screen pop p50 at 20 calls/s", soak_pct(loaded, 0.5) * 1000, "ms", "-",
                    soak_pct(unloaded, 0.5) * 1000, "unloaded p50"))
    rate, load = offered["loaded"]
    rows.append(row("screen pop: calls/s the simulator offered in the loaded phase", rate, "calls/s",
                    "20", load, "load average (1 min) as the phase ended"))
    return rows


PARTS = {"search": bench_search, "export": bench_export, "pop": bench_pop}


def run(quick: bool = False, parts: tuple[str, ...] = tuple(PARTS)) -> list[Row]:
    rows: list[Row] = []
    for name in parts:
        print(f"-- {name}", file=sys.stderr, flush=True)
        before = os.getloadavg()[0]
        rows += asyncio.run(PARTS[name](quick))
        # The machine is shared (2 cores): how busy it was says how far to trust the latencies.
        rows.append(row(f"{name}: machine load average (1 min) at the end, 2 cores", os.getloadavg()[0],
                        "", "-", before, "at the start"))
    return rows


if __name__ == "__main__":
    from bench.__main__ import format_table

    wanted = tuple(a for a in sys.argv[1:] if a in PARTS) or tuple(PARTS)
    print(format_table(run(quick="--quick" in sys.argv, parts=wanted)))
