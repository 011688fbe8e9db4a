"""Call tracking throughput: raw AMI bytes -> parsed events -> CallTracker -> SQLite, on synthetic
traffic made from the real traces (each call copied with fresh ids, many calls interleaved);
reference: the same bytes parsed with no processing. Also the tracker's memory with 1,000 calls
in progress.

Run: /work/venv/bin/python -m bench.bench_tracker [--quick]
"""

from __future__ import annotations

import asyncio
import gc
import os
import random
import re
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pbx_bridge.ami.events import AmiEvent
from pbx_bridge.calls import store
from pbx_bridge.calls.changes import CallChange
from pbx_bridge.calls.tracker import CallTracker, TrackerSettings
from pbx_bridge.db import migrate
from pbx_bridge.db.engine import make_engine
from pbx_bridge.simulator.trace import read_trace

ROOT = Path(__file__).resolve().parent.parent
TRACES = Path(os.environ.get("PBX_BRIDGE_SHARED", ROOT.parent / "shared")) / "ami-traces"
LAB = ["inbound_answered", "inbound_answered_recorded", "inbound_noanswer", "inbound_busy",
       "queue_ringall_answered", "outbound_answered", "click_to_call", "internal_call"]
SETTINGS = TrackerSettings(pbx="lab",
                           operator_channel=re.compile(r"^Local/(?P<ext>1\d\d)@(operators|op-phone)-"),
                           inbound_contexts=frozenset({"from-trunk"}))
CUSTOMER_NUMBERS = [b"74951234567", b"79161234567", b"79161112233", b"74957654321", b"84959876543",
                    b"89035550199", b"74991234567"]
BATCH = 1000  # events per transaction, as the consumer drains its queue


def call_templates() -> list[tuple[list[bytes], list[bytes]]]:
    """Per lab trace: its event messages (raw bytes) and the id values to rewrite."""
    out = []
    for name in LAB:
        frames = [f for f in read_trace(TRACES / f"{name}.ami") if f.kind == "event"
                  and not f.name.startswith("CoreShowChannel")]
        ids = {v for f in frames for k, v in f.headers
               if v and k.lower().endswith(("uniqueid", "linkedid"))}
        out.append(([f.raw for f in frames], sorted((i.encode() for i in ids), key=len, reverse=True)))
    return out


def synthetic_stream(n_calls: int, concurrent: int, seed: int = 1) -> tuple[bytes, int]:
    """n_calls calls (the lab traces in turn, fresh ids), `concurrent` of them interleaved at a
    time, as one AMI byte stream. Returns (bytes, number of events)."""
    templates = call_templates()
    rng = random.Random(seed)
    calls: list[list[bytes]] = []
    for i in range(n_calls):
        messages, ids = templates[i % len(templates)]
        tag = f"-b{i}".encode()
        # A different customer on every call, so number normalization is not all cache hits.
        tail = f"{(i * 7919) % 10**7:07d}".encode()
        rewritten = []
        for raw in messages:
            for old in ids:
                raw = raw.replace(b": " + old + b"\r\n", b": " + old + tag + b"\r\n")
            for number in CUSTOMER_NUMBERS:
                raw = raw.replace(number, number[:-7] + tail)
            rewritten.append(raw)
        calls.append(rewritten)
    out: list[bytes] = []
    active: list[Iterator[bytes]] = []
    pending = iter(calls)
    while True:
        while len(active) < concurrent:
            nxt = next(pending, None)
            if nxt is None:
                break
            active.append(iter(nxt))
        if not active:
            break
        k = rng.randrange(len(active))
        msg = next(active[k], None)
        if msg is None:
            active.pop(k)
        else:
            out.append(msg)
    return b"".join(out), len(out)


def parse(data: bytes, pbx: str = "lab") -> Iterator[AmiEvent]:
    """A plain AMI message parser (the wire side owns the real one): `Key: value` lines, a blank
    line between messages, ChanVariable lines into `variables`."""
    now = time.time()
    for block in data.split(b"\r\n\r\n"):
        if not block:
            continue
        headers: dict[str, str] = {}
        variables: dict[str, str] = {}
        name = ""
        for line in block.decode("utf-8", "replace").split("\r\n"):
            key, _, value = line.partition(": ")
            if key == "Event":
                name = value
            elif key == "ChanVariable":
                var, _, val = value.partition("=")
                variables[var] = val
            else:
                headers[key] = value
        if name:
            yield AmiEvent(pbx, name, headers, variables, now)


# The machine is shared: rates are events per second of this process's CPU time (all its
# threads, so aiosqlite's writer counts too), which is what "on one core" means; wall-clock
# rates are reported next to them.
def bench_parse_only(data: bytes) -> tuple[float, float]:
    start, cpu = time.perf_counter(), time.process_time()
    n = sum(1 for _ in parse(data))
    return n / (time.process_time() - cpu), n / (time.perf_counter() - start)


def bench_tracker(data: bytes) -> tuple[float, float, int, int]:
    tracker = CallTracker(SETTINGS)
    changes = n = 0
    start, cpu = time.perf_counter(), time.process_time()
    for ev in parse(data):
        changes += len(tracker.feed(ev))
        n += 1
    cpu_rate = n / (time.process_time() - cpu)
    return cpu_rate, n / (time.perf_counter() - start), changes, len(tracker.live_calls())


async def bench_full(data: bytes) -> tuple[float, float, int]:
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite+aiosqlite:///{Path(tmp) / 'bench.sqlite3'}")
        await migrate.upgrade(engine)
        tracker = CallTracker(SETTINGS)
        pending: list[CallChange] = []
        n = 0
        start, cpu = time.perf_counter(), time.process_time()
        for ev in parse(data):
            pending += tracker.feed(ev)
            n += 1
            if n % BATCH == 0 and pending:
                async with engine.begin() as conn:
                    await store.save_changes(conn, pending)
                pending = []
        if pending:
            async with engine.begin() as conn:
                await store.save_changes(conn, pending)
        cpu_rate = n / (time.process_time() - cpu)
        wall_rate = n / (time.perf_counter() - start)
        async with engine.connect() as conn:
            saved = len(await store.list_calls(conn, limit=None))
        await engine.dispose()
    return cpu_rate, wall_rate, saved


def bench_memory(n_calls: int) -> tuple[float, float]:
    """Tracker memory with n_calls in progress: every call fed up to its answer."""
    templates = call_templates()
    streams = []
    for i in range(n_calls):
        messages, ids = templates[i % len(templates)]
        tag = f"-m{i}".encode()
        cut = next((k for k, m in enumerate(messages) if b"Event: BridgeEnter" in m), len(messages) // 2)
        part = []
        for raw in messages[: cut + 1]:
            for old in ids:
                raw = raw.replace(b": " + old + b"\r\n", b": " + old + tag + b"\r\n")
            part.append(raw)
        streams.append(b"".join(part))
    events = [ev for s in streams for ev in parse(s)]
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    tracker = CallTracker(SETTINGS)
    for ev in events:
        tracker.feed(ev)
    gc.collect()
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    live = len(tracker.live_calls())
    assert live == n_calls, live
    return (current - base) / 1e6, (peak - base) / 1e6


def run(quick: bool = False) -> list[dict[str, Any]]:
    n_calls = 200 if quick else 2000
    data, n_events = synthetic_stream(n_calls, concurrent=50)
    parse_cpu, parse_wall = bench_parse_only(data)
    tracker_cpu, _tracker_wall, n_changes, left = bench_tracker(data)
    full_cpu, full_wall, saved = asyncio.run(bench_full(data))
    in_progress = 200 if quick else 1000
    mem_now, mem_peak = bench_memory(in_progress)
    print(f"{n_calls} calls, {n_events} events, {n_changes} changes, {left} left live, "
          f"{saved} saved", file=sys.stderr)
    ref = "parse only, same bytes, no processing (CPU time)"
    return [
        {"figure": "parse -> tracker -> SQLite, batches of 1000 events (CPU time)",
         "value": round(full_cpu), "unit": "events/s", "target": ">= 20000",
         "reference": round(parse_cpu), "reference_name": ref},
        {"figure": "parse -> tracker -> SQLite, batches of 1000 events (wall clock)",
         "value": round(full_wall), "unit": "events/s", "target": ">= 20000",
         "reference": round(parse_wall), "reference_name": "parse only (wall clock)"},
        {"figure": "parse -> tracker (CPU time)", "value": round(tracker_cpu), "unit": "events/s",
         "target": "", "reference": round(parse_cpu), "reference_name": ref},
        {"figure": f"tracker memory, {in_progress} calls in progress", "value": round(mem_now, 2),
         "unit": "MB", "target": "", "reference": round(mem_peak, 2),
         "reference_name": "peak while feeding (tracemalloc)"},
    ]


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv):
        print(row)
