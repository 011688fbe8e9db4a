"""A bridge restart: `pbx-bridge serve` (a subprocess) killed with SIGKILL while a call is live,
then started again, reconciles: the call is followed to its end when still up, or closed as
ended during the outage when it ended meanwhile; never duplicated, never lost."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from pbx_bridge.ami.journal import read_records
from pbx_bridge.simulator.server import AmiSimulator, SimulatorSettings
from pbx_bridge.simulator.templates import broadcast_events
from pbx_bridge.simulator.trace import Frame, read_trace
from tests.e2e_support import (
    all_calls,
    cli_env,
    free_port,
    split_at_event,
    start_serve,
    toml_str,
    wait_until,
)
from tests.tracker_support import EXPECTED, LAB_OPERATORS, check_record

TRACE = "inbound_answered"


def _config(tmp: Path, db_url: str, ami_port: int) -> Path:
    path = tmp / "bridge.toml"
    path.write_text(f"""
[server]
port = {free_port()}
data_dir = {toml_str(tmp / "var")}

[database]
url = {toml_str(db_url)}

[recordings]
policy = "none"

[[pbx]]
name = "lab"
port = {ami_port}
secret = "simulator"
operator_channel = {toml_str(LAB_OPERATORS)}
inbound_contexts = ["from-trunk"]
asterisk_version = "22.10.1"
reconnect_min = 0.05
reconnect_max = 0.2
""")
    return path


async def _live_call_then_kill(sim: AmiSimulator, engine: AsyncEngine, env: dict[str, str],
                               log: Path, head: list[Frame]) -> None:
    proc = await start_serve(env, log)
    try:
        await sim.wait_logins(1, timeout=20)
        await sim.replay([head], speed=0)

        async def answered_and_live() -> bool:
            calls = await all_calls(engine)
            return len(calls) == 1 and calls[0].answered_at is not None and calls[0].ended_at is None

        await wait_until(answered_and_live, 15, "the live call saved")
    finally:
        proc.send_signal(signal.SIGKILL)
        assert await asyncio.wait_for(proc.wait(), 10) == -signal.SIGKILL


def _mid_talk(traces: Path) -> tuple[list[Frame], list[Frame]]:
    frames = read_trace(traces / f"{TRACE}.ami")
    events = broadcast_events(frames)
    bridged = max(i for i, f in enumerate(events) if f.name == "BridgeEnter")
    head, rest = split_at_event(frames, bridged + 1)
    return head, rest


async def test_killed_mid_call_then_restarted_follows_the_call_to_its_end(
        engine: AsyncEngine, db_url: str, traces: Path, tmp_path: Path) -> None:
    async with AmiSimulator(SimulatorSettings(auth_fail_delay=0.05, seed=3,
                                              spool_dir=tmp_path / "spool")) as sim:
        env = cli_env(_config(tmp_path, db_url, sim.port))
        log = tmp_path / "serve.log"
        head, rest = _mid_talk(traces)
        await _live_call_then_kill(sim, engine, env, log, head)
        [before] = await all_calls(engine)
        proc = await start_serve(env, log)
        try:
            await sim.wait_logins(2, timeout=20)
            await sim.replay([rest], speed=0)
            await wait_until(lambda: _all_ended(engine), 15, "the call ended")
            [rec] = await all_calls(engine)
            assert rec.id == before.id
            check_record(rec, EXPECTED[TRACE])  # the README's record, times from the events
            assert not rec.ended_during_outage
        finally:
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 15) == 0, log.read_text()[-3000:]


async def test_killed_mid_call_that_ends_while_down_is_closed_once(
        engine: AsyncEngine, db_url: str, traces: Path, tmp_path: Path) -> None:
    async with AmiSimulator(SimulatorSettings(auth_fail_delay=0.05, seed=3,
                                              spool_dir=tmp_path / "spool")) as sim:
        env = cli_env(_config(tmp_path, db_url, sim.port))
        log = tmp_path / "serve.log"
        head, rest = _mid_talk(traces)
        await _live_call_then_kill(sim, engine, env, log, head)
        [before] = await all_calls(engine)
        await sim.replay([rest], speed=0)  # the call ends meanwhile
        assert sim.live_channels() == []
        proc = await start_serve(env, log)
        try:
            await sim.wait_logins(2, timeout=20)
            await wait_until(lambda: _all_ended(engine), 15, "the call closed by the resync")
            [rec] = await all_calls(engine)
            assert rec.id == before.id and rec.linkedid == before.linkedid
            assert rec.ended_during_outage and rec.status == "answered"
            assert rec.ended_at is not None and rec.answered_at == before.answered_at
        finally:
            proc.send_signal(signal.SIGINT)  # Ctrl-C under `make run`: the same clean stop
            assert await asyncio.wait_for(proc.wait(), 15) == 0, log.read_text()[-3000:]


async def _all_ended(engine: AsyncEngine) -> bool:
    calls = await all_calls(engine)
    return bool(calls) and all(c.ended_at is not None for c in calls)


@contextlib.asynccontextmanager
async def _saves_blocked(db_url: str) -> AsyncIterator[None]:
    """Another session holds the database so the bridge cannot save (its writes wait)."""
    if db_url.startswith("sqlite"):
        holder = sqlite3.connect(db_url.split("///", 1)[1], isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        return
    conn = await asyncpg.connect(db_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        tx = conn.transaction()
        await tx.start()
        await conn.execute("LOCK TABLE calls IN ACCESS EXCLUSIVE MODE")
        try:
            yield
        finally:
            await tx.rollback()
    finally:
        await conn.close()


def _journaled(tmp: Path) -> list[str]:
    texts = []
    for path in sorted((tmp / "var" / "journal" / "lab").glob("*.journal")):
        texts += [text for _seq, _at, text in read_records(path)]
    return texts


async def test_events_read_but_not_saved_when_killed_are_applied_at_the_next_start(
        engine: AsyncEngine, db_url: str, traces: Path, tmp_path: Path) -> None:
    """The whole call reaches the bridge while it cannot save (the database held by another
    session); the bridge is killed with SIGKILL. Asterisk will never send those events again and
    the call is over: only the journal has it. The next start gives the exact record."""
    async with AmiSimulator(SimulatorSettings(auth_fail_delay=0.05, seed=3,
                                              spool_dir=tmp_path / "spool")) as sim:
        env = cli_env(_config(tmp_path, db_url, sim.port))
        log = tmp_path / "serve.log"
        frames = read_trace(traces / f"{TRACE}.ami")
        wanted = len(broadcast_events(frames))
        proc = await start_serve(env, log)
        try:
            await sim.wait_logins(1, timeout=20)
            async with _saves_blocked(db_url):
                await sim.replay([frames], speed=0)
                await wait_until(lambda: len(_journaled(tmp_path)) >= wanted, 15,
                                 "the call's events journaled")
                await asyncio.sleep(0.3)
                proc.send_signal(signal.SIGKILL)
                assert await asyncio.wait_for(proc.wait(), 10) == -signal.SIGKILL
        finally:
            if proc.returncode is None:
                proc.kill()
        assert await all_calls(engine) == []  # nothing of it was saved
        assert sim.live_channels() == []  # and the PBX has nothing left to show
        proc = await start_serve(env, log)
        try:
            await wait_until(lambda: _all_ended(engine), 15, "the call applied from the journal")
            [rec] = await all_calls(engine)
            check_record(rec, EXPECTED[TRACE])
            assert not rec.ended_during_outage
        finally:
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 15) == 0, log.read_text()[-3000:]
        assert "calls.journal_replay" in log.read_text()
