"""`make soak`: the whole bridge under load and faults, checked against the simulator's own ground
truth of the calls it generated.

The bridge runs as it does in production, `python -m pbx_bridge serve` in its own process, on its
own PostgreSQL database (created and dropped here), talking AMI to a simulator in this process
(the `--calls-per-second` generator, real traces rewritten) and HTTP to a test CRM in this process.
100 WebSocket clients on /api/v1/events run in a third process.

Phases (each bounded in time; on an idle 2-core machine the full run takes about 8 minutes plus
the time the bridge needs to work through its backlog, `quick` about 3):
  load        N calls at 50 calls/s (10,000 full, 500 quick), 100 WebSocket clients, the external
              CRM down for the whole run and started afterwards. Every call exactly once with the
              right status; screen-pop latency (the simulator writing the ring event -> a client
              receiving call.ringing), event lag (the Hangup written -> call.ended received),
              peak RSS of the bridge; then the outbox delivers everything, in order per client.
  ami_cuts    1,500 calls (300 quick), the AMI connection cut 100 times (10) at random: resync
              after each.
  sigkill     1,000 calls (300), the bridge killed with SIGKILL at 40 % and restarted.
  pg_restart  1,000 calls (300), PostgreSQL restarted at 40 % (`pg_ctlcluster ... restart`):
              only here, never in the test command (other tests use that server).
  transcribe  8 jobs (3) on 2 worker processes, workers killed by SIGKILL mid-job 3 times (1).

A call that starts and ends entirely while the bridge cannot see the PBX (disconnected, or the
bridge dead) is invisible to any AMI client (Asterisk keeps no event history): such calls are
counted and reported, not required. Every other call must be present exactly once, ended; its
status must be right unless its events overlapped the gap (then it is closed "ended during
outage", as the AMI issue specifies).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import psutil
import sqlalchemy as sa
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from crm_sync.schema import outbox
from pbx_bridge.auth.tokens import create_token
from pbx_bridge.db.engine import make_engine
from pbx_bridge.db.schema import calls
from pbx_bridge.simulator.calls import CallValues, LiveCall
from pbx_bridge.simulator.server import AmiSimulator, SimulatorSettings
from pbx_bridge.simulator.templates import CallTemplate

ROOT = Path(__file__).resolve().parent.parent
PG = "postgresql://postgres@127.0.0.1:5432"
PG_CLUSTER = ("15", "main")
RATE = 50.0
# What each generated trace must end as (shared/ami-traces/README.md).
EXPECTED_STATUS = {
    "inbound_answered": "answered", "queue_ringall_answered": "answered",
    "inbound_noanswer": "no_answer", "inbound_busy": "busy", "outbound_answered": "answered",
    "internal_call": "answered",
}
Row = dict[str, Any]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- ground truth --------------------------------------------------------------------------------


@dataclass
class Truth:
    template: str
    customer: str
    start: float  # epoch of the call's first event (its Timestamps are start + offset)
    end: float  # epoch of its last event


class TruthSimulator(AmiSimulator):
    """The generator, remembering every call it generated and when it wrote each call's first
    ring (DialBegin) on the wire."""

    def __init__(self, settings: SimulatorSettings) -> None:
        super().__init__(settings)
        self.truth: dict[str, Truth] = {}
        self.ring_sent: dict[str, float] = {}
        self.added_at: list[float] = []  # monotonic time of each generated call's start

    def add_call(self, template: CallTemplate, values: CallValues) -> LiveCall:
        call = super().add_call(template, values)
        self.added_at.append(time.monotonic())
        linkedid = call.values[_first_uid_slot(template)]
        self.truth[linkedid] = Truth(template.name, values.customer, call.start,
                                     call.start + template.duration)
        return call

    def broadcast(self, data: bytes) -> None:
        super().broadcast(data)
        if b"Event: DialBegin" not in data:
            return
        now = time.time()
        for message in data.split(b"\r\n\r\n"):
            if message.startswith(b"Event: DialBegin"):
                at = message.find(b"\r\nLinkedid: ")
                if at != -1:
                    end = message.find(b"\r\n", at + 12)
                    self.ring_sent.setdefault(message[at + 12:end].decode(), now)


def _first_uid_slot(template: CallTemplate) -> str:
    """The Uniqueid slot of the template's first Newchannel: the call's Linkedid."""
    for event in template.events:
        if event.name == "Newchannel":
            for line in event.fmt.split("\r\n"):
                if line.startswith("Uniqueid: {") and line.endswith("}"):
                    return line[len("Uniqueid: {"):-1]
    raise ValueError(f"template {template.name} has no Newchannel")


# -- the test CRM --------------------------------------------------------------------------------


class TestCrm:
    """The external CRM: records every delivery (kind, outbox id, payload). Down = not listening."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.received: list[tuple[str, int, Row]] = []
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        payload = await request.json()
        key = request.headers.get("Idempotency-Key", "")
        self.received.append((request.path.strip("/"), int(key.rsplit("-", 1)[-1]), payload))
        return web.json_response({"ok": True})

    async def up(self) -> None:
        app = web.Application()
        app.router.add_post("/contacts", self._handle)
        app.router.add_post("/calls", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def down(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


# -- the bridge process --------------------------------------------------------------------------


class BridgeProcess:
    def __init__(self, config: Path, http_port: int, log_path: Path) -> None:
        self.config = config
        self.http_port = http_port
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.peak_rss = 0  # the serve process itself
        self.peak_workers_pss = 0  # its transcription worker processes (the model's pages shared)

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pbx_bridge", "--config", str(self.config), "serve"],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)

    async def ready(self, timeout: float = 60.0) -> None:  # noqa: ASYNC109
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                assert self.proc is not None and self.proc.poll() is None, \
                    f"bridge exited: see {self.log_path}"
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"http://127.0.0.1:{self.http_port}/healthz") as resp:
                        if resp.status == 200:
                            return
                await asyncio.sleep(0.2)
        raise TimeoutError("bridge not ready")

    def sample_rss(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(self.proc.pid)
            self.peak_rss = max(self.peak_rss, proc.memory_info().rss)
            workers = sum(c.memory_full_info().pss for c in proc.children(True))
            self.peak_workers_pss = max(self.peak_workers_pss, workers)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# -- WebSocket clients (their own process) -------------------------------------------------------


async def _clients_main(url: str, count: int, out: str) -> None:
    """`count` clients on /api/v1/events until SIGTERM; then writes, per call, when each client
    received call.ringing, and (client 0) call.ended's delay after the call's ended_at."""
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    ringing: dict[str, list[float]] = {}
    ended_lag: dict[str, float] = {}
    stats = {"connected": 0, "messages": 0, "closed_early": 0}

    async def client(index: int, http: aiohttp.ClientSession) -> None:
        async with http.ws_connect(url, heartbeat=None, max_msg_size=0) as ws:
            stats["connected"] += 1
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                now = time.time()
                data = json.loads(msg.data)
                stats["messages"] += 1
                kind = data.get("type")
                if kind == "call.ringing":
                    ringing.setdefault(data["call"]["linkedid"] + f"#{index}", [now])
                elif kind == "call.ended" and index == 0 and data["call"].get("ended_at"):
                    ended = datetime.fromisoformat(data["call"]["ended_at"].replace("Z", "+00:00"))
                    ended_lag[data["call"]["linkedid"]] = now - ended.timestamp()
        if not stop.is_set():
            stats["closed_early"] += 1

    async with aiohttp.ClientSession() as http:
        tasks = [asyncio.create_task(client(i, http)) for i in range(count)]
        await stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    first: dict[str, list[float]] = {}
    for key, (when,) in ringing.items():
        first.setdefault(key.rsplit("#", 1)[0], []).append(round(when, 4))
    Path(out).write_text(json.dumps({"ringing": first, "ended_lag": ended_lag, "stats": stats}))  # noqa: ASYNC240 - once, at the end


# -- the harness ---------------------------------------------------------------------------------


@dataclass
class Soak:
    tmp: Path
    quick: bool
    rate: float = RATE  # calls/s of every phase
    load_calls: int | None = None  # the load phase's size (None: 10,000, or 500 quick)
    db: str = field(default_factory=lambda: f"pbx_soak_{os.getpid()}")
    rows: list[Row] = field(default_factory=list)
    http_port: int = field(default_factory=_free_port)
    crm_port: int = field(default_factory=_free_port)

    def figure(self, figure: str, value: float, unit: str, target: str = "-",
               reference: float | None = None, reference_name: str = "") -> None:
        row = {"figure": figure, "value": round(value, 3), "unit": unit, "target": target,
               "reference": reference, "reference_name": reference_name}
        print(f"   {figure}: {row['value']} {unit}  (target {target})", file=sys.stderr, flush=True)
        self.rows.append(row)

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:5432/{self.db}"

    async def setup(self) -> None:
        admin = await asyncpg.connect(f"{PG}/postgres")
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{self.db}" WITH (FORCE)')
            await admin.execute(f'CREATE DATABASE "{self.db}"')
        finally:
            await admin.close()
        self.sim = TruthSimulator(SimulatorSettings(seed=2026, operators=("101", "102", "103")))
        await self.sim.start()
        self.config = self.tmp / "soak.toml"
        self.config.write_text(CONFIG.format(
            http_port=self.http_port, data_dir=self.tmp / "var", url=self.url, sim_port=self.sim.port,
            crm=self.crm_port))
        subprocess.run([sys.executable, "-m", "pbx_bridge", "--config", str(self.config), "db",  # noqa: ASYNC221 - set-up, nothing else runs yet
                        "upgrade"], cwd=ROOT, check=True, capture_output=True)
        self.engine: AsyncEngine = make_engine(self.url)
        async with self.engine.begin() as conn:
            _info, self.token = await create_token(conn, name="soak", role="admin")
        self.crm = TestCrm(self.crm_port)
        self.bridge = BridgeProcess(self.config, self.http_port, self.tmp / "bridge.log")
        self.bridge.start()
        await self.bridge.ready()
        await self.sim.wait_logins(1, timeout=30)
        self._sampler = asyncio.create_task(self._sample())

    async def teardown(self) -> None:
        if hasattr(self, "_sampler"):
            self._sampler.cancel()
        self.bridge.stop()
        await self.crm.down()
        await self.sim.stop()
        await self.engine.dispose()
        admin = await asyncpg.connect(f"{PG}/postgres")
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{self.db}" WITH (FORCE)')
        finally:
            await admin.close()

    async def generate(self, count: int, during: Callable[[float], Awaitable[None]] | None = None,
                       ) -> dict[str, Truth]:
        """`count` calls at RATE; `during(seconds)` runs alongside; returns this phase's truth."""
        before = set(self.sim.truth)
        self.sim.start_generator(self.rate, max_calls=count)
        seconds = count / self.rate
        if during is not None:
            await during(seconds)
        while len(self.sim.truth) - len(before) < count or self.sim.calls:  # noqa: ASYNC110 - polling the simulator
            await asyncio.sleep(0.2)
        return {k: v for k, v in self.sim.truth.items() if k not in before}

    async def _sample(self) -> None:
        while True:
            self.bridge.sample_rss()
            await asyncio.sleep(0.25)

    async def records(self, linkedids: set[str]) -> dict[str, list[Row]]:
        found: dict[str, list[Row]] = {}
        async with self.engine.connect() as conn:
            result = await conn.execute(sa.select(calls).where(calls.c.pbx == "main"))
            for row in result.mappings():
                if row["linkedid"] in linkedids:
                    found.setdefault(row["linkedid"], []).append(dict(row))
        return found

    async def settle(self, truth: dict[str, Truth], required: set[str],
                     timeout: float = 600.0) -> dict[str, list[Row]]:  # noqa: ASYNC109
        """Wait until every required call is ended in the database (or the timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            found = await self.records(set(truth))
            done = sum(1 for k in required if any(r["state"] == "ended" for r in found.get(k, [])))
            if done == len(required) or time.monotonic() > deadline:
                return found
            await asyncio.sleep(1.0)

    def check(self, phase: str, truth: dict[str, Truth], found: dict[str, list[Row]],
              gaps: list[tuple[float, float]]) -> None:
        """Exactly once, ended, right status; calls inside a gap excluded, overlapping ones
        allowed to be closed as ended during the outage."""
        invisible = {k for k, t in truth.items()
                     if any(a <= t.start and t.end <= b for a, b in gaps)}
        touched = {k for k, t in truth.items() if k not in invisible
                   and any(t.start <= b and a <= t.end for a, b in gaps)}
        required = set(truth) - invisible
        missing = [k for k in required if k not in found]
        duplicated = [k for k, rows in found.items() if len(rows) > 1]
        not_ended = [k for k in required if k in found and found[k][0]["state"] != "ended"]
        # The PBX itself may drop a bridge that reads too slowly (Asterisk does, so does the
        # simulator past 16 MB of backlog): such calls are flagged ended_during_outage.
        flagged = {k for k in required if k in found and found[k][0]["ended_during_outage"]}
        clean = required - touched - flagged
        wrong = [k for k in clean if k in found and
                 found[k][0]["status"] != EXPECTED_STATUS[truth[k].template]]
        touched_right = sum(1 for k in touched if k in found and
                            found[k][0]["status"] == EXPECTED_STATUS[truth[k].template])
        self.figure(f"{phase}: calls generated", len(truth), "calls")
        self.figure(f"{phase}: calls missing from the call log", len(missing), "calls", "0")
        self.figure(f"{phase}: calls recorded twice", len(duplicated), "calls", "0")
        self.figure(f"{phase}: calls not ended", len(not_ended), "calls", "0")
        self.figure(f"{phase}: wrong status (calls clear of any gap)", len(wrong), "calls", "0",
                    len(clean), "calls clear of any gap")
        self.figure(f"{phase}: calls closed as ended during an outage", len(flagged), "calls",
                    "0 when the bridge keeps up", len(required), "calls")
        if flagged - touched:
            right = sum(1 for k in flagged - touched
                        if found[k][0]["status"] == EXPECTED_STATUS[truth[k].template])
            self.figure(f"{phase}: of those outside our own faults, status still right", right,
                        "calls", "-", len(flagged - touched), "calls")
        if gaps:
            self.figure(f"{phase}: calls entirely inside a gap (invisible to AMI)", len(invisible),
                        "calls")
            self.figure(f"{phase}: calls overlapping a gap, status still right", touched_right,
                        "calls", "-", len(touched), "calls overlapping a gap")
        if gaps and missing:
            in_flight = sum(1 for k in missing if any(truth[k].start < a <= truth[k].end <= b
                                                     for a, b in gaps))
            self.figure(f"{phase}: of the missing, calls begun before a gap and ended inside it",
                        in_flight, "calls", "-", len(missing), "missing")
        for name, bad in (("missing", missing), ("duplicated", duplicated),
                          ("not ended", not_ended), ("wrong status", wrong)):
            for k in bad[:3]:
                print(f"   {phase} {name}: {k} {truth[k]} {found.get(k)}", file=sys.stderr)

    # -- phases --------------------------------------------------------------------------------

    async def phase_load(self) -> None:
        count = self.load_calls or (500 if self.quick else 10_000)
        out = self.tmp / "clients.json"
        ws_url = (f"ws://127.0.0.1:{self.http_port}/api/v1/events?access_token={self.token}"
                  "&types=call.ringing,call.ended")
        clients = subprocess.Popen([sys.executable, "-m", "bench.bench_soak", "--clients", ws_url,  # noqa: ASYNC220
                                    "100", str(out)], cwd=ROOT)
        await asyncio.sleep(3.0)  # let the 100 clients connect
        self.bridge.peak_rss = self.bridge.peak_workers_pss = 0
        assert self.bridge.proc is not None
        bridge_ps = psutil.Process(self.bridge.proc.pid)
        cpu_before = sum(bridge_ps.cpu_times()[:2])
        written_before = bridge_ps.io_counters().write_bytes
        events_before = self.sim.events_sent
        logins_before = self.sim._logins
        first_added = len(self.sim.added_at)
        truth = await self.generate(count)  # the CRM is down all along
        added = self.sim.added_at[first_added:]
        wall = added[-1] - added[0] if len(added) > 1 else 1.0
        found = await self.settle(truth, set(truth), timeout=3600.0)
        cpu = sum(bridge_ps.cpu_times()[:2]) - cpu_before
        written = bridge_ps.io_counters().write_bytes - written_before
        events = self.sim.events_sent - events_before
        clients.send_signal(signal.SIGTERM)
        clients.wait(60)
        result = json.loads(out.read_text())
        self.check("load", truth, found, [])
        self.figure("load: offered rate", (count - 1) / max(wall, 1e-9), "calls/s", f"{self.rate:.0f}")
        self.figure("load: AMI events through the whole stack per bridge CPU-second",
                    events / max(cpu, 1e-9), "events/s", f">= {events / count * self.rate:,.0f} "
                    f"(one free core keeps up with {self.rate:.0f} calls/s)", events / count,
                    "events per call")
        self.figure("load: machine load average (1 min) at the end, 2 cores shared",
                    os.getloadavg()[0], "")
        pops = [when - self.sim.ring_sent[k] for k, whens in result["ringing"].items()
                if k in self.sim.ring_sent for when in whens]
        self.figure("load: screen pop p99 (ring written by the PBX -> call.ringing received, "
                    f"{result['stats']['connected']} clients)", _pct(pops, 0.99) * 1000, "ms",
                    "- (bench_api, unloaded: <= 20)", _pct(pops, 0.5) * 1000, "p50")
        lags = list(result["ended_lag"].values())
        self.figure("load: event lag p99 (Hangup's Timestamp -> call.ended received)",
                    _pct(lags, 0.99) * 1000, "ms", "-", _pct(lags, 0.5) * 1000, "p50")
        self.figure("load: WebSocket clients disconnected before the end",
                    result["stats"]["closed_early"], "clients", "0")
        with_pop = sum(1 for k in truth if k in result["ringing"])
        self.figure("load: calls whose call.ringing reached all 100 clients",
                    sum(1 for k in truth if len(result["ringing"].get(k, [])) == 100), "calls",
                    "-", with_pop, "calls with a call.ringing")
        self.figure("load: bridge peak RSS (the serve process)", self.bridge.peak_rss / 2**20, "MB")
        self.figure("load: bridge disk writes per call (the AMI journal, logs)",
                    written / count / 1024, "kB")
        self.figure("load: its idle transcription workers, peak PSS together",
                    self.bridge.peak_workers_pss / 2**20, "MB")
        self.figure("load: sessions the PBX dropped for reading too slowly",
                    self.sim._logins - logins_before, "drops", "0")
        await self.check_outbox(truth, found)

    async def check_outbox(self, truth: dict[str, Truth], found: dict[str, list[Row]]) -> None:
        """The CRM was down for the whole load: start it, wait for the outbox to empty."""
        async with self.engine.connect() as conn:
            queued = (await conn.execute(sa.select(sa.func.count()).select_from(outbox))).scalar_one()
        self.figure("crm down: outbox items queued while the CRM was down", queued, "items")
        await self.crm.up()
        started = time.monotonic()
        pending = queued
        while time.monotonic() - started < (60 if self.quick else 300):
            async with self.engine.connect() as conn:
                pending = (await conn.execute(sa.select(sa.func.count()).select_from(outbox).where(
                    outbox.c.delivered_at.is_(None)))).scalar_one()
            if pending == 0:
                break
            await asyncio.sleep(0.5)
        self.figure("crm down: time to deliver the backlog once the CRM is up",
                    time.monotonic() - started, "s")
        self.figure("crm down: outbox items still undelivered", pending, "items", "0")
        async with self.engine.connect() as conn:
            rows = {r.id: r for r in await conn.execute(sa.select(outbox.c.id, outbox.c.client_key,
                                                                  outbox.c.dead))}
        first: dict[int, int] = {}
        for n, (_kind, item_id, _payload) in enumerate(self.crm.received):
            first.setdefault(item_id, n)
        out_of_order = 0
        by_client: dict[str, list[int]] = {}
        for item_id in sorted(first, key=first.__getitem__):
            by_client.setdefault(rows[item_id].client_key, []).append(item_id)
        for ids in by_client.values():
            out_of_order += sum(1 for a, b in itertools.pairwise(ids) if b < a)
        self.figure("crm down: items delivered out of order for their client", out_of_order,
                    "items", "0", len(by_client), "clients")
        self.figure("crm down: dead letters", sum(1 for r in rows.values() if r.dead), "items", "0")
        call_ids = {p.get("call_id") for kind, _i, p in self.crm.received if kind == "calls"}
        expected = {rows_[0]["id"] for k, rows_ in found.items()
                    if truth[k].customer and k in truth}
        self.figure("crm down: calls with a customer never posted to the CRM",
                    len(expected - call_ids), "calls", "0", len(expected), "calls with a customer")
        unposted = sorted(expected - call_ids)[:3]
        if unposted:
            by_id = {rows_[0]["id"]: rows_[0] for rows_ in found.values()}
            async with self.engine.connect() as conn:
                items = list(await conn.execute(sa.select(outbox)))
            for call_id in unposted:
                row = by_id[call_id]
                queued = [(i.id, i.kind, i.delivered_at, i.payload.get("call_id")) for i in items
                          if i.payload.get("linkedid") == row["linkedid"]]
                shown = {k: row[k] for k in ("linkedid", "direction", "status", "customer_number",
                                             "client_id", "ended_during_outage")}
                print(f"   unposted call {call_id}: {shown} outbox={queued}", file=sys.stderr)
        self.figure("crm down: deliveries received more than once (at-least-once)",
                    len(self.crm.received) - len(first), "requests")

    async def phase_ami_cuts(self) -> None:
        count = 300 if self.quick else 1_500
        cuts = 10 if self.quick else 100
        gaps: list[tuple[float, float]] = []

        async def cutter(seconds: float) -> None:
            rng = random.Random(9)
            moments = sorted(rng.uniform(0.5, seconds) for _ in range(cuts))
            begin = time.monotonic()
            logins = self.sim._logins
            for at in moments:
                await asyncio.sleep(max(0.0, at - (time.monotonic() - begin)))
                dropped = time.time()
                self.sim.drop_clients()
                logins += 1
                await self.sim.wait_logins(logins, timeout=30)
                # The snapshot after the login closes the gap: give it the answer's time.
                gaps.append((dropped - 0.05, time.time() + 0.05))

        truth = await self.generate(count, cutter)
        required = {k for k, t in truth.items() if not any(a <= t.start and t.end <= b
                                                           for a, b in gaps)}
        found = await self.settle(truth, required)
        self.check("ami cuts", truth, found, gaps)
        self.figure("ami cuts: connection cuts", len(gaps), "cuts", str(cuts))

    async def phase_sigkill(self) -> None:
        count = 300 if self.quick else 1_000
        gaps: list[tuple[float, float]] = []

        async def killer(seconds: float) -> None:
            await asyncio.sleep(seconds * 0.4)
            logins = self.sim._logins
            async with self.engine.connect() as conn:
                newest = (await conn.execute(sa.select(sa.func.max(calls.c.started_at)))).scalar()
            killed = time.time()
            self.bridge.kill()
            if newest is not None:
                # Calls start every 20 ms: the newest call in the database is how far behind the
                # PBX the pipeline was; events in that window were only in the bridge's memory.
                self.figure("sigkill: pipeline lag at the kill (now - newest call start stored)",
                            killed - newest.timestamp(), "s")
            await asyncio.sleep(1.0)
            self.bridge.start()
            await self.bridge.ready()
            await self.sim.wait_logins(logins + 1, timeout=60)
            gaps.append((killed - 0.05, time.time() + 0.05))

        truth = await self.generate(count, killer)
        required = {k for k, t in truth.items() if not any(a <= t.start and t.end <= b
                                                           for a, b in gaps)}
        found = await self.settle(truth, required)
        self.check("sigkill", truth, found, gaps)
        if gaps:
            self.figure("sigkill: bridge down (kill -> logged in again)", gaps[0][1] - gaps[0][0],
                        "s")

    async def phase_pg_restart(self) -> None:
        count = 300 if self.quick else 1_000

        async def restart(seconds: float) -> None:
            await asyncio.sleep(seconds * 0.4)
            started = time.monotonic()
            proc = await asyncio.create_subprocess_exec(
                "pg_ctlcluster", "--skip-systemctl-redirect", *PG_CLUSTER, "restart",
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
            _out, err = await proc.communicate()
            assert proc.returncode == 0, err.decode()
            self.figure("pg restart: PostgreSQL restart took", time.monotonic() - started, "s")

        truth = await self.generate(count, restart)
        await self.engine.dispose()  # our own pool's connections died with the server
        found = await self.settle(truth, set(truth))
        self.check("pg restart", truth, found, [])

    async def phase_transcribe(self) -> None:
        from pbx_bridge.transcription.tags import write_call_tags
        from recordings.transcription import jobs
        from recordings.transcription.recognize import default_model_dir
        from recordings.transcription.schema import transcription_jobs, transcripts
        from recordings.transcription.worker import WorkerOptions, WorkerPool
        from tests.conftest import TRACES  # the shared recordings the test audio is built from
        from tests.transcription_audio import long_call_wav

        count = 3 if self.quick else 8
        kills = 1 if self.quick else 3
        wav = long_call_wav(TRACES, self.tmp / "long.wav", repeats=1)
        job_ids = []
        async with self.engine.begin() as conn:
            for i in range(count):
                job_ids.append(await jobs.enqueue(conn, 900_000 + i, str(wav)))
        options = WorkerOptions(
            database_url=self.url, model_dir=str(default_model_dir()), lease_seconds=3.0,
            max_attempts=5, retry_backoff_seconds=0.5, poll_seconds=0.2,
            engine_factory=make_engine, tag_writer=write_call_tags, owner_prefix="soak")
        pool = WorkerPool(options, 2)
        pool.start()
        killed = 0
        started = time.monotonic()
        try:
            while time.monotonic() - started < 600:
                async with self.engine.connect() as conn:
                    states = list(await conn.execute(sa.select(
                        transcription_jobs.c.id, transcription_jobs.c.state,
                        transcription_jobs.c.lease_owner).where(
                        transcription_jobs.c.id.in_(job_ids))))
                if all(s.state in ("done", "failed") for s in states):
                    break
                running = [s for s in states if s.state == "running" and s.lease_owner]
                if killed < kills and running:
                    await asyncio.sleep(0.5)  # well into the recognition
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(running[0].lease_owner.split(":")[1]), signal.SIGKILL)
                        killed += 1
                await asyncio.sleep(0.2)
        finally:
            pool.stop(timeout=60)
        async with self.engine.connect() as conn:
            states = list(await conn.execute(sa.select(transcription_jobs).where(
                transcription_jobs.c.id.in_(job_ids))))
            per_call: dict[int, int] = dict(list(await conn.execute(
                sa.select(transcripts.c.call_id, sa.func.count()).where(
                    transcripts.c.call_id >= 900_000).group_by(transcripts.c.call_id))))
        self.figure("transcribe: workers killed mid-job (SIGKILL)", killed, "workers", str(kills))
        self.figure("transcribe: jobs done", sum(1 for s in states if s.state == "done"), "jobs",
                    str(count))
        self.figure("transcribe: calls with other than exactly one transcript",
                    sum(1 for i in range(count) if per_call.get(900_000 + i, 0) != 1), "calls", "0")
        self.figure("transcribe: attempts used (killed attempts are retried)",
                    sum(s.attempts for s in states), "attempts", "-", count, "jobs")


CONFIG = """
[server]
host = "127.0.0.1"
port = {http_port}
data_dir = "{data_dir}"

[database]
url = "{url}"

[logging]
level = "WARNING"

[phone]
default_region = "RU"

[simulator]
enabled = false

[[pbx]]
name = "main"
host = "127.0.0.1"
port = {sim_port}
username = "bridge"
secret = "simulator"
operator_channel = '^Local/(?P<ext>1\\d\\d)@(operators|op-phone)-'
inbound_contexts = ["from-trunk"]
ping_interval = 2.0
ping_timeout = 5.0
reconnect_min = 0.05
reconnect_max = 0.5

[crm]
external_enabled = true
external_contact_url = "http://127.0.0.1:{crm}/contacts"
external_call_url = "http://127.0.0.1:{crm}/calls"
external_connect_timeout = 0.5
external_timeout = 2.0
outbox_max_attempts = 100000
outbox_retry_base = 0.5
outbox_retry_max = 3.0
outbox_poll_interval = 0.2

[recordings]
policy = "none"

[api]
event_queue_size = 5000
"""


PHASES = ("load", "ami_cuts", "sigkill", "pg_restart", "transcribe")


async def _run(quick: bool, phases: tuple[str, ...] = PHASES, rate: float = RATE,
               load_calls: int | None = None) -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="pbx-soak-") as tmp:
        soak = Soak(Path(tmp), quick, rate=rate, load_calls=load_calls)
        await soak.setup()
        try:
            for phase in [getattr(soak, f"phase_{name}") for name in phases]:
                print(f"-- {phase.__name__}", file=sys.stderr, flush=True)
                started = time.monotonic()
                try:
                    await phase()
                except Exception as exc:  # one phase failing must not hide the others' figures
                    import traceback

                    traceback.print_exc()
                    soak.figure(f"{phase.__name__.removeprefix('phase_')}: phase FAILED ({exc!r:.80})",
                                1, "failure", "0")
                print(f"   {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
        finally:
            await soak.teardown()
            log = Path(tmp) / "bridge.log"
            if log.exists():
                text = log.read_text(errors="replace")
                kept = ROOT / "bench" / "soak-bridge.log"
                kept.write_text(text[-200_000:])
                print(f"   bridge log (tail) kept in {kept}", file=sys.stderr)
        return soak.rows


def run(quick: bool = False) -> list[Row]:
    return asyncio.run(_run(quick))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.bench_soak")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--phases", default=",".join(PHASES), help="comma-separated subset")
    parser.add_argument("--rate", type=float, default=RATE, help="calls per second")
    parser.add_argument("--calls", type=int, default=None, help="size of the load phase")
    parser.add_argument("--clients", nargs=3, metavar=("URL", "COUNT", "OUT"),
                        help="(internal) run the WebSocket clients")
    args = parser.parse_args()
    if args.clients:
        asyncio.run(_clients_main(args.clients[0], int(args.clients[1]), args.clients[2]))
    else:
        from bench.__main__ import format_table

        rows = asyncio.run(_run(args.quick, tuple(args.phases.split(",")), args.rate, args.calls))
        print(format_table(rows))
