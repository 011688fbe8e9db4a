"""Hot standby: two `pbx-bridge serve` subprocesses on one PostgreSQL and one simulated PBX
(calls from its generator, CEL written into PostgreSQL). Exactly one is active. Killed (SIGKILL)
or cut off from the database, it is replaced within 5 s, with no call lost or written twice and no
second MixMonitor; frozen past its lease (SIGSTOP) and woken (SIGCONT), it stands down before it
can act."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.bench_soak import EXPECTED_STATUS, TruthSimulator
from bench.standby_cluster import BridgeNode, Cluster
from pbx_bridge.auth.tokens import create_token
from pbx_bridge.db.engine import make_engine
from pbx_bridge.db.schema import calls
from pbx_bridge.simulator.server import SimulatorSettings
from tests.cel_support import unique_table
from tests.conftest import _truncate_all
from tests.e2e_support import wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(240)]
RATE = 2.0  # calls per second
STATUS = {**EXPECTED_STATUS, "click_to_call": "answered"}
# Calls play at the traces' own pace (5-10 s): their CEL rows carry the times they happen, as a
# real PBX writes them (faster play would date the rows in the future).
SPEED = 1.0
TAKEOVER_LIMIT = 5.0


@pytest.fixture
async def shared_db(pg_database: str) -> AsyncIterator[str]:
    engine = make_engine(pg_database)
    await _truncate_all(engine)
    await engine.dispose()
    yield pg_database


@pytest.fixture
async def cluster(shared_db: str, cel_pg_url: str,
                  tmp_path: Path) -> AsyncIterator[tuple[Cluster, TruthSimulator]]:
    sim = TruthSimulator(SimulatorSettings(seed=11, auth_fail_delay=0.05, speed=SPEED,
                                           spool_dir=tmp_path / "spool", cel_url=cel_pg_url,
                                           cel_table=unique_table()))
    await sim.start()
    cluster = Cluster(tmp_path, shared_db, cel_pg_url, sim.settings.cel_table, sim.port, tmp_path / "spool")
    try:
        yield cluster, sim
    finally:
        await asyncio.to_thread(cluster.stop)
        await sim.stop()


async def _generate(sim: TruthSimulator, count: int) -> None:
    sim.start_generator(RATE, max_calls=count)
    while len(sim.truth) < count:  # noqa: ASYNC110 - polling the simulator
        await asyncio.sleep(0.1)


Rows = dict[str, list[dict[str, object]]]


async def _settled(engine: AsyncEngine, sim: TruthSimulator, within: float = 90.0) -> Rows:
    """Once the simulator has played every call: each one ended in the log (AMI, or CEL for
    what fell in a takeover's gap)."""
    while sim.calls:  # noqa: ASYNC110
        await asyncio.sleep(0.1)

    async def rows() -> Rows:
        async with engine.connect() as conn:
            found: Rows = {}
            for row in (await conn.execute(sa.select(calls))).mappings():
                found.setdefault(str(row["linkedid"]), []).append(dict(row))
            return found

    async def done() -> bool:
        found = await rows()
        return all(k in found and found[k][0]["state"] == "ended"
                   and not found[k][0]["ended_during_outage"] for k in sim.truth)

    await wait_until(done, within, "every call ended in the log")
    return await rows()


def _check_once(sim: TruthSimulator, found: Rows) -> None:
    assert set(found) == set(sim.truth), "no call lost, none invented"
    assert all(len(rows) == 1 for rows in found.values())
    wrong = {k: (found[k][0]["status"], t.template) for k, t in sim.truth.items()
             if found[k][0]["status"] != STATUS[t.template]}
    assert not wrong


def _mixmonitors_per_channel(sim: TruthSimulator) -> dict[str, int]:
    counts: dict[str, int] = {}
    for action in sim.actions:
        if action.name.lower() == "mixmonitor":
            counts[action.get("Channel")] = counts.get(action.get("Channel"), 0) + 1
    return counts


async def _two(cluster: Cluster, **kw: bool) -> tuple[BridgeNode, BridgeNode]:
    a = await cluster.add(**kw)
    await cluster.wait_role(a, "active", 30)
    b = await cluster.add()
    await cluster.wait_role(b, "standby", 30)
    return a, b


async def test_a_killed_active_is_replaced_within_5_s_and_no_call_is_lost_or_doubled(
        cluster: tuple[Cluster, TruthSimulator], shared_db: str) -> None:
    c, sim = cluster
    a, b = await _two(c)
    engine = make_engine(shared_db)
    try:
        async with engine.begin() as conn:
            _info, token = await create_token(conn, name="crm", role="crm")
            # The operator whose phone rings first: a known extension (issue 18).
            await create_token(conn, name="op101", role="operator", extension="101")
        generating = asyncio.create_task(_generate(sim, 40))
        await wait_until(lambda: len(sim.truth) >= 12, 30, "calls under way")
        # A click-to-call placed just before the active one dies: placed once, never again.
        async with aiohttp.ClientSession() as http, http.post(
                f"{a.url}/api/v1/click-to-call", headers={"Authorization": f"Bearer {token}"},
                json={"extension": "101", "number": "89161234567"}) as r:
            assert r.status == 202, await r.text()
            request = await r.json()
        a.signal(signal.SIGKILL)
        took = await c.wait_role(b, "active", 15)
        await generating
        found = await _settled(engine, sim)
    finally:
        await engine.dispose()
    assert took <= TAKEOVER_LIMIT, took
    _check_once(sim, found)
    assert max(_mixmonitors_per_channel(sim).values()) == 1, "no channel recorded twice"
    originates = [act for act in sim.actions if act.name.lower() == "originate"]
    assert [act.get("Variable") for act in originates] == [f"__CALL_ID={request['id']}"]
    [c2c] = [rows[0] for rows in found.values() if rows[0]["click_to_call_id"] == request["id"]]
    assert c2c["direction"] == "outbound" and c2c["status"] == "answered"
    sources = {str(rows[0]["source"]) for rows in found.values()}
    assert "ami" in sources  # and, for what fell in the gap, CEL
    assert "standby.active" in b.text()


async def test_a_frozen_active_stands_down_when_it_wakes(
        cluster: tuple[Cluster, TruthSimulator], shared_db: str) -> None:
    c, sim = cluster
    a, b = await _two(c)
    engine = make_engine(shared_db)
    try:
        generating = asyncio.create_task(_generate(sim, 30))
        await wait_until(lambda: len(sim.truth) >= 8, 30, "calls under way")
        a.signal(signal.SIGSTOP)
        frozen_at = time.monotonic()
        took = await c.wait_role(b, "active", 15)
        await asyncio.sleep(max(0.0, c.lease_seconds + 2 - (time.monotonic() - frozen_at)))
        woke = sim.clock()
        a.signal(signal.SIGCONT)
        await c.wait_role(a, "standby", 15)
        await generating
        found = await _settled(engine, sim)
    finally:
        await engine.dispose()
    assert took <= TAKEOVER_LIMIT + c.lease_seconds, took
    _check_once(sim, found)
    assert max(_mixmonitors_per_channel(sim).values()) == 1
    # Once awake, the old active sent nothing that acts on the PBX.
    a_session = next(act.session for act in sim.actions if act.name.lower() == "login")
    acted = [act for act in sim.actions if act.session == a_session and act.at > woke
             and act.name.lower() in ("mixmonitor", "stopmixmonitor", "originate")]
    assert acted == []
    assert "standby.standing_down" in a.text()


async def test_an_active_cut_off_from_the_database_is_replaced(
        cluster: tuple[Cluster, TruthSimulator], shared_db: str) -> None:
    c, sim = cluster
    a, b = await _two(c, through_proxy=True)
    engine = make_engine(shared_db)
    try:
        generating = asyncio.create_task(_generate(sim, 20))
        await wait_until(lambda: len(sim.truth) >= 6, 30, "calls under way")
        c.proxies[a.index].cut()
        took = await c.wait_role(b, "active", 15)
        await c.wait_role(a, "standby", 15)  # it knows: its lease could not be renewed
        await generating
        found = await _settled(engine, sim)
    finally:
        await engine.dispose()
    assert took <= TAKEOVER_LIMIT, took
    _check_once(sim, found)


async def test_click_to_call_on_a_standby_is_503_naming_the_active_one(
        cluster: tuple[Cluster, TruthSimulator], shared_db: str) -> None:
    c, _sim = cluster
    a, b = await _two(c)
    engine = make_engine(shared_db)
    try:
        async with engine.begin() as conn:
            _info, token = await create_token(conn, name="crm", role="crm")
            # The operator whose phone rings first: a known extension (issue 18).
            await create_token(conn, name="op101", role="operator", extension="101")
    finally:
        await engine.dispose()
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{b.url}/api/v1/click-to-call", headers=headers,
                             json={"extension": "101", "number": "89161234567"}) as r:
            assert r.status == 503
            assert r.headers["Retry-After"] == "2"
            assert r.headers["X-PBX-Bridge-Active"].startswith(a.url)
            assert (await r.json())["error"]["code"] == "standby"
        async with http.get(f"{b.url}/readyz", headers=headers) as r:
            assert r.status == 403  # crm may not; the role shows to managers (below)
        async with http.get(f"{a.url}/healthz/active") as r:
            assert r.status == 200 and (await r.json())["role"] == "active"
        async with http.get(f"{b.url}/healthz/active") as r:
            assert r.status == 503 and (await r.json())["role"] == "standby"
        # Reads work on the standby.
        async with http.get(f"{b.url}/api/v1/calls", headers=headers) as r:
            assert r.status == 200
