"""CEL backfill: calls rebuilt per second from a CEL table of 1,000,000 rows (about 70,000 calls),
as `pbx-bridge calls backfill` and serve's sweep do them: find the calls ended in the window,
read their rows, rebuild them through the tracker, save them (PostgreSQL, the bridge's own
database). Reference, same run: the bare SELECT of the same rows (the same queries, nothing done
with the rows). Also the rebuild alone (CPU, rows already in memory).

The table is filled from the real CEL rows of the six SIP traces (shared/ami-traces/cel/), each
call copied with fresh ids and times, in a realistic mix; with the indexes docs/asterisk.md recommends
(linkedid, uniqueid, eventtime).

Run: .venv/bin/python -m bench.bench_backfill [--quick]
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import random
import re
import sys
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from pbx_bridge.calls.backfill import Backfiller
from pbx_bridge.calls.consumer import CallConsumer
from pbx_bridge.calls.rebuild import rebuild_calls
from pbx_bridge.calls.tracker import TrackerSettings
from pbx_bridge.cel.source import CelSource
from pbx_bridge.config import CelConfig
from pbx_bridge.db import migrate
from pbx_bridge.db.engine import make_engine

ROOT = Path(__file__).resolve().parent.parent
CEL_DIR = Path(os.environ.get("PBX_BRIDGE_SHARED", ROOT.parent / "shared")) / "ami-traces" / "cel"
PG = os.environ.get("PBX_BRIDGE_BENCH_PG", "postgresql://postgres@127.0.0.1:5432")
# How often each kind of call happens in the table (rows per call: 9 to 40, about 14 on average).
MIX = {"sip_inbound_answered_cel": 50, "sip_queue_ringall_cel": 20, "sip_outbound_busy_cel": 20,
       "sip_internal_call": 10, "sip_attended_transfer": 2, "sip_pickup": 2}
SETTINGS = TrackerSettings(pbx="main", operator_channel=re.compile(r"^(?:PJSIP|SIP)/(?P<ext>\d{2,5})-"),
                           inbound_contexts=frozenset({"from-trunk"}))
COLUMNS = ("eventtype", "eventtime", "userdeftype", "cid_name", "cid_num", "cid_ani", "cid_rdnis",
           "cid_dnid", "exten", "context", "channame", "appname", "appdata", "amaflags",
           "accountcode", "peeraccount", "uniqueid", "linkedid", "userfield", "peer", "extra")
START = datetime(2026, 12, 1, 8, 0, 0)  # a working day, naive UTC as cel_pgsql writes it


def templates() -> dict[str, list[dict[str, Any]]]:
    out = {}
    for name in MIX:
        with open(CEL_DIR / f"{name}.csv", newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        t0 = datetime.fromisoformat(rows[0]["eventtime"])
        for row in rows:
            row["offset"] = (datetime.fromisoformat(row["eventtime"]) - t0).total_seconds()
        out[name] = rows
    return out


def generate(n_rows: int, seed: int = 3) -> tuple[list[tuple[Any, ...]], int]:
    """Rows for about n_rows (each call whole), calls spread over the day. Returns (rows, calls)."""
    rng = random.Random(seed)
    tpl = templates()
    names, weights = list(MIX), list(MIX.values())
    rows: list[tuple[Any, ...]] = []
    calls = 0
    while len(rows) < n_rows:
        name = rng.choices(names, weights)[0]
        prefix = f"c{calls}-"
        start = START + timedelta(seconds=calls * 0.5 + rng.random())
        for src in tpl[name]:
            values = dict(src)
            values["eventtime"] = start + timedelta(seconds=float(src["offset"]))
            values["uniqueid"] = prefix + src["uniqueid"]
            values["linkedid"] = prefix + src["linkedid"]
            if "_uniqueid" in (src["extra"] or ""):
                extra = json.loads(src["extra"])
                values["extra"] = json.dumps({k: prefix + v if k.endswith("_uniqueid") else v
                                              for k, v in extra.items()})
            values["amaflags"] = int(values["amaflags"] or 0)
            rows.append(tuple(values[c] for c in COLUMNS))
        calls += 1
    return rows, calls


async def fill(cel_dsn: str, rows: list[tuple[Any, ...]]) -> None:
    conn = await asyncpg.connect(cel_dsn)
    try:
        await conn.execute("""
            CREATE TABLE cel (
              id bigserial PRIMARY KEY, eventtype varchar(30) NOT NULL, eventtime timestamp NOT NULL,
              userdeftype varchar(255) NOT NULL, cid_name varchar(80) NOT NULL,
              cid_num varchar(80) NOT NULL, cid_ani varchar(80) NOT NULL,
              cid_rdnis varchar(80) NOT NULL, cid_dnid varchar(80) NOT NULL,
              exten varchar(80) NOT NULL, context varchar(80) NOT NULL,
              channame varchar(80) NOT NULL, appname varchar(80) NOT NULL,
              appdata varchar(512) NOT NULL, amaflags int NOT NULL, accountcode varchar(80) NOT NULL,
              peeraccount varchar(80) NOT NULL, uniqueid varchar(150) NOT NULL,
              linkedid varchar(150) NOT NULL, userfield varchar(255) NOT NULL,
              peer varchar(80) NOT NULL, extra varchar(512) NOT NULL)""")
        await conn.copy_records_to_table("cel", records=rows, columns=list(COLUMNS))
        for column in ("linkedid", "uniqueid", "eventtime"):
            await conn.execute(f"CREATE INDEX ON cel ({column})")
        await conn.execute("ANALYZE cel")
    finally:
        await conn.close()


async def _bare_select(source: CelSource, since: datetime, until: datetime, batch: int) -> int:
    """The reference: the same queries the backfill makes, nothing done with the rows."""
    ended = await source.ended_between(since, until)
    linkedids = list(dict.fromkeys(lid for lid, _ in ended))
    rows = 0
    for i in range(0, len(linkedids), batch):
        rows += len(await source.call_rows(linkedids[i:i + batch]))
    return rows


async def _backfill(source: CelSource, bridge_url: str, since: datetime, until: datetime,
                    config: CelConfig) -> tuple[int, float]:
    engine = make_engine(bridge_url)
    await migrate.upgrade(engine)
    queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=4)
    consumer = CallConsumer(queue, engine, lambda name: SETTINGS if name == "main" else None,
                            cel_live_grace=0.0)
    task = asyncio.create_task(consumer.run())
    backfiller = Backfiller("main", source, engine, queue.put, config)
    cpu = time.process_time()
    await backfiller.sweep("bench", since=since.timestamp(), until=until.timestamp())
    await queue.join()
    await consumer.stop()
    await task
    cpu = time.process_time() - cpu
    await engine.dispose()
    return consumer.backfilled, cpu  # (a pickup's phone ended its own Linkedid: not a call)


async def measure(n_rows: int) -> list[dict[str, Any]]:
    suffix = uuid.uuid4().hex[:8]
    cel_db, bridge_db = f"bench_cel_{suffix}", f"bench_bridge_{suffix}"
    admin = await asyncpg.connect(f"{PG}/postgres")
    for db in (cel_db, bridge_db):
        await admin.execute(f'CREATE DATABASE "{db}"')
    try:
        rows, n_calls = generate(n_rows)
        started = time.perf_counter()
        await fill(f"{PG}/{cel_db}", rows)
        print(f"   table: {len(rows):,} rows, {n_calls:,} calls, loaded in "
              f"{time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
        since, until = START - timedelta(hours=1), START + timedelta(days=1)
        cel_url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{cel_db}"
        config = CelConfig(batch_calls=2000)
        source = CelSource("main", cel_url, "cel", query_timeout=600)
        try:
            t = time.perf_counter()
            fetched = await _bare_select(source, since, until, config.batch_calls)
            select_s = time.perf_counter() - t
            # The rebuild alone, on rows already read (CPU only).
            sample = await source.call_rows(
                [lid for lid, _ in (await source.ended_between(since, until))[:20_000]])
            t = time.perf_counter()
            rebuilt = rebuild_calls(sample, SETTINGS)
            rebuild_s = time.perf_counter() - t
            t = time.perf_counter()
            saved, cpu = await _backfill(source, f"postgresql+asyncpg://postgres@127.0.0.1:5432/{bridge_db}",
                                         since, until, config)
            backfill_s = time.perf_counter() - t
        finally:
            await source.close()
    finally:
        for db in (cel_db, bridge_db):
            await admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        await admin.close()
    assert saved == n_calls, (saved, n_calls)
    return [
        {"figure": f"backfill from {len(rows):,} CEL rows ({n_calls:,} calls): read, rebuild, save",
         "value": round(saved / backfill_s), "unit": "calls/s", "target": ">= 1,000",
         "reference": round(n_calls / select_s), "reference_name": "bare SELECT of the same rows (calls/s)"},
        {"figure": "backfill: bridge CPU per call", "value": round(cpu / saved * 1e6), "unit": "µs",
         "target": "-", "reference": round(select_s, 1),
         "reference_name": f"bare SELECT of {fetched:,} rows (s)"},
        {"figure": "rebuild alone (rows in memory -> records)",
         "value": round(len(rebuilt.records) / rebuild_s), "unit": "calls/s", "target": "-",
         "reference": None, "reference_name": ""},
        {"figure": "backfill: wall time", "value": round(backfill_s, 1), "unit": "s",
         "target": "a 100-seat day in about a minute", "reference": round(select_s, 1),
         "reference_name": "bare SELECT (s)"},
    ]


def run(quick: bool = False) -> list[dict[str, Any]]:
    return asyncio.run(measure(100_000 if quick else 1_000_000))


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv):
        print(row)
