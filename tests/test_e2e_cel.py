"""Every call in the log even when the bridge was not listening, through `pbx-bridge serve` (a
subprocess) and the simulated PBX, which writes the CEL rows of the calls it plays into a real
PostgreSQL `cel` table as cel_pgsql would: a call played while the bridge was stopped is in the
log once it starts (with its card, call-back task and CRM outbox item); a call that ends while a
SIGKILLed bridge is down gets its true end time."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from crm_sync.schema import client_phones, outbox, tasks
from pbx_bridge.simulator.server import AmiSimulator, SimulatorSettings
from pbx_bridge.simulator.templates import broadcast_events
from pbx_bridge.simulator.trace import read_trace
from tests.cel_support import unique_table
from tests.e2e_support import all_calls, cli_env, free_port, split_at_event, start_serve, toml_str, wait_until
from tests.tracker_support import EXPECTED, LAB_OPERATORS, SIP_OPERATORS, check_record


def _config(tmp: Path, db_url: str, ami_port: int, cel_url: str, table: str, operators: str) -> Path:
    path = tmp / "bridge.toml"
    path.write_text(f"""
[server]
port = {free_port()}
data_dir = {toml_str(tmp / "var")}

[database]
url = {toml_str(db_url)}

[recordings]
policy = "none"

[crm]
external_enabled = true
# Nobody listens there: the outbox keeps what it would send.
external_call_url = "http://127.0.0.1:{free_port()}/calls"

[[pbx]]
name = "lab"
port = {ami_port}
secret = "simulator"
operator_channel = {toml_str(operators)}
inbound_contexts = ["from-trunk"]
asterisk_version = "22.10.1"
reconnect_min = 0.05
reconnect_max = 0.2
cel_url = {toml_str(cel_url)}
cel_table = {toml_str(table)}
""")
    return path


def _simulator(tmp: Path, cel_url: str, table: str) -> AmiSimulator:
    return AmiSimulator(SimulatorSettings(auth_fail_delay=0.05, seed=5, spool_dir=tmp / "spool",
                                          cel_url=cel_url, cel_table=table))


async def _stop(proc: asyncio.subprocess.Process, log: Path) -> None:
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(proc.wait(), 20) == 0, _tail(log)


def _tail(log: Path) -> str:
    return log.read_text()[-3000:]


async def test_a_call_played_while_the_bridge_was_stopped_is_in_the_log_after_it_starts(
        engine: AsyncEngine, db_url: str, cel_pg_url: str, traces: Path, tmp_path: Path) -> None:
    name = "inbound_noanswer"
    table = unique_table()
    async with _simulator(tmp_path, cel_pg_url, table) as sim:
        env = cli_env(_config(tmp_path, db_url, sim.port, cel_pg_url, table, LAB_OPERATORS))
        log = tmp_path / "serve.log"
        # Nobody listens on AMI: only Asterisk's CEL keeps the call (which ended a minute ago).
        frames = read_trace(traces / f"{name}.ami")
        last = max(f.timestamp for f in broadcast_events(frames) if f.timestamp is not None)
        await sim.replay([frames], speed=0, shift=time.time() - last - 60)
        assert sim.cel is not None
        await sim.cel.flush()
        assert await all_calls(engine) == []
        proc = await start_serve(env, log)
        try:
            await wait_until(lambda: _calls(engine, 1), 30, "the call backfilled at start")
            [rec] = await all_calls(engine)
            check_record(rec, EXPECTED[name])
            assert rec.source == "cel" and rec.missed
            await wait_until(lambda: _crm_done(engine, rec.customer_number or ""), 15, "its CRM work")
        finally:
            await _stop(proc, log)
    text = log.read_text()
    assert "cel.swept" in text and "Traceback" not in text


async def _calls(engine: AsyncEngine, count: int) -> bool:
    calls = await all_calls(engine)
    return len(calls) == count and all(c.ended_at is not None for c in calls)


async def _crm_done(engine: AsyncEngine, number: str) -> bool:
    """The missed caller's card, an open call-back task, the call in the CRM's outbox."""
    async with engine.connect() as conn:
        card = (await conn.execute(sa.select(client_phones.c.client_id)
                                   .where(client_phones.c.e164 == number))).first()
        task = (await conn.execute(sa.select(tasks.c.id).where(tasks.c.status == "open"))).first()
        queued = (await conn.execute(sa.select(sa.func.count()).select_from(outbox))).scalar()
    return card is not None and task is not None and bool(queued)


async def test_killed_mid_call_the_call_gets_its_true_end_time(
        engine: AsyncEngine, db_url: str, cel_pg_url: str, traces: Path, tmp_path: Path) -> None:
    name = "sip_inbound_answered_cel"
    table = unique_table()
    frames = read_trace(traces / f"{name}.ami")
    events = broadcast_events(frames)
    talking = max(i for i, f in enumerate(events) if f.name == "BridgeEnter")
    head, rest = split_at_event(frames, talking + 1)
    first = next(f.timestamp for f in events if f.timestamp is not None)
    assert first is not None
    shift = time.time() - first - 30  # the call began 30 s ago
    async with _simulator(tmp_path, cel_pg_url, table) as sim:
        env = cli_env(_config(tmp_path, db_url, sim.port, cel_pg_url, table, SIP_OPERATORS))
        log = tmp_path / "serve.log"
        proc = await start_serve(env, log)
        try:
            await sim.wait_logins(1, timeout=30)
            await sim.replay([head], speed=0, shift=shift)

            async def live_and_answered() -> bool:
                calls = await all_calls(engine)
                return len(calls) == 1 and calls[0].answered_at is not None and calls[0].ended_at is None

            await wait_until(live_and_answered, 20, "the live call saved")
        finally:
            proc.send_signal(signal.SIGKILL)
            await asyncio.wait_for(proc.wait(), 10)
        [live] = await all_calls(engine)
        await sim.replay([rest], speed=0, shift=shift)  # the call ends while the bridge is dead
        assert sim.cel is not None
        await sim.cel.flush()
        proc = await start_serve(env, log)
        try:
            async def completed() -> bool:
                calls = await all_calls(engine)
                return len(calls) == 1 and calls[0].source == "ami+cel"

            # (The first CoreShowChannels may close it first, as ended during the outage; the
            # sweep then gives it its true end.)
            await wait_until(completed, 30, "the call completed from CEL")
            [rec] = await all_calls(engine)
        finally:
            await _stop(proc, log)
    assert rec.id == live.id and rec.source == "ami+cel" and not rec.ended_during_outage
    check_record(rec, EXPECTED[name])
    hangups = [f.timestamp for f in events if f.name == "Hangup" and f.timestamp is not None]
    assert abs((rec.ended_at or 0) - (max(hangups) + shift)) < 0.3  # its true end
