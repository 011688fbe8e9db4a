"""HTTP API benchmarks (issue 5).

1. Click-to-call: POST /api/v1/click-to-call -> the Originate read off the AMI socket, p99 at
   200 requests/s (target <= 15 ms). The AMI peer is the project's simulator, the bridge's side
   the real PbxConnection.
2. Screen pop: a ring event entering the call pipeline's queue -> the call.ringing message read
   by each of 100 WebSocket clients, p99, with 1,000,000 client cards (target <= 20 ms). With the
   tracker, consumer and CRM hook in the tree the whole path runs (tracker, save, card lookup,
   notifier, bus, WebSocket); without them only notifier -> clients, and the figure says so.

Reference in the same run: an aiohttp handler returning a constant, same load, same client.
Load generators run in their own process (bench/api_clients.py); times are CLOCK_MONOTONIC.

    /work/venv/bin/python -m bench.bench_api [--quick]
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from pbx_bridge.auth.tokens import create_token
from pbx_bridge.config import PbxConfig, Settings
from pbx_bridge.db import migrate
from pbx_bridge.db.engine import make_engine, make_sessionmaker
from pbx_bridge.runtime import Runtime
from pbx_bridge.server.app import make_app

RATE = 200.0
CLIENTS = 100
CARDS = 1_000_000
ROOT = str(Path(__file__).resolve().parent.parent)
LAB_OPERATORS = r"^Local/(?P<ext>1\d\d)@(operators|op-phone)-"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def row(figure: str, value: float, unit: str, target: str, reference: float | None = None,
        reference_name: str = "") -> dict[str, Any]:
    return {"figure": figure, "value": round(value, 3), "unit": unit, "target": target,
            "reference": None if reference is None else round(reference, 3),
            "reference_name": reference_name}


async def _client(*args: str, ready: Callable[[], Any] | None = None) -> Any:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.api_clients", *args, stdout=asyncio.subprocess.PIPE,
        cwd=ROOT, limit=1 << 28)
    assert proc.stdout is not None
    last = b""
    while True:
        line = await proc.stdout.readline()
        if not line:
            break
        if line.strip() == b"READY" and ready is not None:
            await ready()
            continue
        last = line
    await proc.wait()
    return json.loads(last)


async def _serve(app: web.Application) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port: int = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, port


async def _constant_app() -> tuple[web.AppRunner, int]:
    async def constant(_request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/const", constant)
    return await _serve(app)


async def _database(tmp: Path) -> tuple[Settings, Any]:
    settings = Settings()
    settings.server.data_dir = str(tmp)
    settings.database.url = f"sqlite+aiosqlite:///{tmp / 'bench.sqlite3'}"
    engine = make_engine(settings.database.url)
    await migrate.upgrade(engine)
    return settings, engine


# --- 1. click-to-call -> Originate on the AMI socket ---------------------------------------------


class _Peer:
    """The AMI side, in its own process (bench/api_clients.py ami): when each Originate (by
    CALL_ID) was read off the socket; the bridge side is PbxConnection."""

    def __init__(self) -> None:
        self.seen: dict[str, float] = {}
        self.label = ""
        self.connection: Any = None
        self._proc: asyncio.subprocess.Process | None = None
        self._stop: list[Callable[[], Any]] = []

    async def start(self, settings: Settings) -> None:
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.api_clients", "ami", "bench", stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, cwd=ROOT, limit=1 << 28)
        assert self._proc.stdout is not None
        _word, port_text, kind = (await self._proc.stdout.readline()).decode().split()
        port = int(port_text)
        config = PbxConfig(name="main", port=port, secret="bench", operator_channel=LAB_OPERATORS)
        settings.pbx = [config]
        from pbx_bridge.ami.connection import PbxConnection

        queue: asyncio.Queue[Any] = asyncio.Queue()
        connection = PbxConnection(config, queue)
        await connection.start()
        for _ in range(200):
            if connection.connected:
                break
            await asyncio.sleep(0.05)

        async def drain() -> None:
            while True:
                await queue.get()

        drainer = asyncio.create_task(drain())
        self._stop = [drainer.cancel, connection.stop]
        self.label = f"PbxConnection -> AMI {kind} in another process"
        self.connection = connection

    async def stop(self) -> None:
        for stop in self._stop:
            result = stop()
            if asyncio.iscoroutine(result):
                with contextlib.suppress(Exception):
                    await result
        if self._proc is not None:
            assert self._proc.stdin is not None and self._proc.stdout is not None
            self._proc.stdin.close()
            out = await self._proc.stdout.read()
            await self._proc.wait()
            self.seen = json.loads(out.decode().strip().splitlines()[-1])["seen"]


async def bench_click_to_call(quick: bool) -> list[dict[str, Any]]:
    count = 600 if quick else 3000
    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
        settings, engine = await _database(Path(tmp))
        settings.click_to_call.rate_per_minute = 1e9
        settings.click_to_call.burst = 10**9
        settings.api.token_cache_seconds = 3600.0
        peer = _Peer()
        await peer.start(settings)
        runtime = Runtime(settings=settings, engine=engine, sessions=make_sessionmaker(engine))
        runtime.pbx["main"] = peer.connection
        async with engine.begin() as conn:
            _info, token = await create_token(conn, name="bench", role="crm")
        runner, port = await _serve(make_app(runtime))
        const_runner, const_port = await _constant_app()
        try:
            answers = await _client("post", f"http://127.0.0.1:{port}/api/v1/click-to-call", token,
                                    str(RATE), str(count))
            await asyncio.sleep(0.5)
            reference = await _client("get", f"http://127.0.0.1:{const_port}/const", str(RATE), str(count))
        finally:
            await runtime.services["click_to_call"].close()
            await runner.cleanup()
            await const_runner.cleanup()
            await peer.stop()
            await engine.dispose()
    accepted = [a for a in answers if a[2] == 202]
    to_originate = [(peer.seen[a[3]] - a[0]) * 1000 for a in accepted if a[3] in peer.seen]
    to_response = [(a[1] - a[0]) * 1000 for a in accepted]
    ref = [(r[1] - r[0]) * 1000 for r in reference if r[2] == 200]
    lost = count - len(to_originate)
    return [
        row(f"click-to-call request -> Originate on the AMI socket, p99 at {RATE:.0f} req/s "
            f"({peer.label}; {len(to_originate)}/{count} originated)",
            pct(to_originate, 99), "ms", "<= 15 ms", pct(ref, 99), "constant aiohttp handler, p99"),
        row("click-to-call request -> Originate, p50", pct(to_originate, 50), "ms", "-",
            pct(ref, 50), "constant aiohttp handler, p50"),
        row("click-to-call request -> 202 response, p99", pct(to_response, 99), "ms", "-"),
        row("click-to-call requests without an Originate", lost, "count", "0"),
    ]


# --- 2. screen pop: ring event -> WebSocket clients --------------------------------------------


class _Pipeline:
    """The call pipeline as serve() wires it, when the tree has it; else notifier only."""

    def __init__(self, runtime: Runtime, settings: Settings) -> None:
        self.runtime = runtime
        self.settings = settings
        self.full = False
        self.label = ""
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None
        self.consumer: Any = None
        self.notified: dict[str, float] = {}  # linkedid -> when the notifier got the ringing

    async def start(self) -> None:
        real_notifier = self.runtime.services["notifier"]
        notified = self.notified

        class TimedNotifier:
            async def on_change(self, change: Any) -> None:
                if change.kind == "ringing":
                    notified.setdefault(change.record.linkedid, time.monotonic())
                await real_notifier.on_change(change)

        notifier = TimedNotifier()
        try:
            from pbx_bridge.calls.consumer import CallConsumer, tracker_settings_for

            hooks: list[Any] = []
            with contextlib.suppress(ImportError):
                from pbx_bridge.clients.hook import CrmHook

                hooks.append(CrmHook(self.runtime.engine, self.settings, bus=self.runtime.bus))
            hooks.append(notifier)
            config = PbxConfig(name="main", secret="x", operator_channel=LAB_OPERATORS,
                               inbound_contexts=["from-trunk"])
            self.consumer = CallConsumer(self.queue, self.runtime.engine,
                                         tracker_settings_for([config], self.settings.phone), hooks)
            self.task = asyncio.create_task(self.consumer.run())
            self.full = True
            self.label = ("queue -> tracker -> save -> CRM lookup -> notifier -> 100 WebSockets"
                          if len(hooks) == 2 else "queue -> tracker -> save -> notifier -> 100 WebSockets")
        except ImportError:
            self.label = "notifier -> 100 WebSockets (tracker and CRM not in this tree)"

    async def stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()
        if self.task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.task, 10)


def _calls(count: int, numbers: list[str]) -> tuple[list[list[Any]], int]:
    """`count` inbound calls rendered from the real inbound_answered trace (fresh ids), as
    AmiEvents, and the index of the event that makes the tracker report `ringing`."""
    from pbx_bridge.ami.protocol import parse_event
    from pbx_bridge.calls.tracker import CallTracker, TrackerSettings
    from pbx_bridge.simulator.calls import CallValues, IdCounters, LiveCall
    from pbx_bridge.simulator.server import AmiSimulator

    template = AmiSimulator().template("inbound_answered")
    counters, rng = IdCounters(), random.Random(7)
    calls = []
    for i in range(count):
        live = LiveCall.create(template, CallValues(customer=numbers[i], operators=["101"]), counters, rng,
                               time.time())
        events = []
        while not live.done:
            events.append(parse_event("main", live.render_next(), time.time()))
        calls.append(events)
    import re

    tracker = CallTracker(TrackerSettings(pbx="main", operator_channel=re.compile(LAB_OPERATORS),
                                          inbound_contexts=frozenset({"from-trunk"}),
                                          default_region="RU", max_extension_length=5))
    ring = next(i for i, ev in enumerate(calls[0]) if any(c.kind == "ringing" for c in tracker.feed(ev)))
    return calls, ring


async def bench_screen_pop(quick: bool) -> list[dict[str, Any]]:
    cards = 20_000 if quick else CARDS
    count = 40 if quick else 200
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-api-pop-") as tmp:
        path = Path(tmp) / "bench.sqlite3"
        loaded = 0
        try:
            from bench.bench_crm import _number, build_database

            seconds = await asyncio.to_thread(build_database, path, cards)
            loaded = cards
            rows.append(row(f"screen pop setup: {cards:,} cards loaded", seconds, "s", "-"))
            rng = random.Random(3)
            # Half the callers have a card (a random one of the million), half do not.
            numbers = [_number(rng.randint(1, cards)) if i % 2 == 0 else f"+7903{i:07d}"
                       for i in range(count)]
        except ImportError:
            numbers = [f"+7903{i:07d}" for i in range(count)]
        settings = Settings()
        settings.server.data_dir = tmp
        settings.database.url = f"sqlite+aiosqlite:///{path}"
        engine = make_engine(settings.database.url)
        if not loaded:
            await migrate.upgrade(engine)
        settings.api.token_cache_seconds = 3600.0
        settings.api.event_queue_size = 10_000
        runtime = Runtime(settings=settings, engine=engine, sessions=make_sessionmaker(engine))
        app = make_app(runtime)
        pipeline = _Pipeline(runtime, settings)
        await pipeline.start()
        async with engine.begin() as conn:
            _info, token = await create_token(conn, name="op", role="operator", extension="101")
        runner, port = await _serve(app)
        const_runner, const_port = await _constant_app()
        sent: dict[str, float] = {}

        async def feed() -> None:
            if pipeline.full:
                calls, ring = _calls(count, numbers)
                for events in calls:
                    for ev in events[:ring]:
                        pipeline.queue.put_nowait(ev)
                    await asyncio.sleep(0.03)  # the call's setup is processed before its ring
                    sent[events[ring].headers["Linkedid"]] = time.monotonic()
                    pipeline.queue.put_nowait(events[ring])
                    await asyncio.sleep(0.03)
                    for ev in events[ring + 1:]:
                        pipeline.queue.put_nowait(ev)
                    await asyncio.sleep(0.02)
            else:
                from pbx_bridge.calls.changes import CallChange
                from pbx_bridge.calls.record import CallRecord

                notifier = runtime.services["notifier"]
                for i in range(count):
                    record = CallRecord(pbx="main", linkedid=f"bench-{i}", started_at=time.time(),
                                        direction="inbound", customer_number=numbers[i],
                                        operators_rung=["101"], id=i + 1)
                    sent[record.linkedid] = time.monotonic()
                    pipeline.notified[record.linkedid] = sent[record.linkedid]
                    await notifier.on_change(CallChange("ringing", record, extension="101"))
                    await asyncio.sleep(0.05)

        feeder: list[asyncio.Task[None]] = []

        async def start_feeding() -> None:
            feeder.append(asyncio.create_task(feed()))

        try:
            got = await _client("ws", f"ws://127.0.0.1:{port}/api/v1/events?types=call.ringing", token,
                                str(CLIENTS), str(count), ready=start_feeding)
            if feeder:
                await feeder[0]
            reference = await _client("get", f"http://127.0.0.1:{const_port}/const", "50", "500")
        finally:
            await runner.cleanup()
            await const_runner.cleanup()
            await pipeline.stop()
            await engine.dispose()
    latencies = [(t - sent[linkedid]) * 1000 for linkedid, t, _ in got["received"] if linkedid in sent]
    to_notifier = [(pipeline.notified[k] - sent[k]) * 1000 for k in sent if k in pipeline.notified]
    fan_out = [(t - pipeline.notified[k]) * 1000 for k, t, _ in got["received"] if k in pipeline.notified]
    with_card = sum(1 for _, _, has in got["received"] if has)
    ref = [(r[1] - r[0]) * 1000 for r in reference if r[2] == 200]
    rows += [
        row(f"screen pop: ring event -> message at each of {CLIENTS} WebSocket clients, p99, "
            f"{loaded:,} cards ({pipeline.label}; {len(latencies)} deliveries, {with_card} with a card)",
            pct(latencies, 99), "ms", "<= 20 ms", pct(ref, 99), "constant aiohttp handler, p99"),
        row("screen pop p50", pct(latencies, 50), "ms", "-", pct(ref, 50), "constant aiohttp handler, p50"),
        row("screen pop, part 1: ring event -> notifier (tracker, save, CRM lookup), p99",
            pct(to_notifier, 99), "ms", "-"),
        row(f"screen pop, part 2: notifier -> message at each of {CLIENTS} clients, p99",
            pct(fan_out, 99), "ms", "-"),
        row("screen pop deliveries missing", CLIENTS * count - len(latencies), "count", "0"),
    ]
    return rows


def run(quick: bool = False) -> list[dict[str, Any]]:
    rows = asyncio.run(bench_click_to_call(quick))
    rows += asyncio.run(bench_screen_pop(quick))
    return rows


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    for r in run(quick="--quick" in args):
        ref = "" if r["reference"] is None else (
            f"  (reference {r['reference']} {r['unit']}: {r['reference_name']})")
        print(f"{r['figure']}: {r['value']} {r['unit']}  target {r['target']}{ref}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
