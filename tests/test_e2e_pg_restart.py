"""PostgreSQL restarts under a running bridge, and nothing is lost.

The bridge as `serve` assembles it, on a PostgreSQL server of this test's own (tests/
private_postgres.py: the machine's shared server is never touched), follows calls the simulated
Asterisk plays over TCP; while they go on, the server is restarted (`pg_ctl restart -m fast`:
every connection cut, the database unavailable for a while). Afterwards every call played is in
the call log exactly once, ended, with the outcome its trace gives; no recording is left half
done.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from pbx_bridge.calls.store import list_calls
from pbx_bridge.config import Settings
from pbx_bridge.db import migrate
from pbx_bridge.db.engine import make_engine
from pbx_bridge.simulator.calls import LiveCall
from recordings.schema import recordings
from tests.private_postgres import private_postgres
from tests.recording_rig import Rig, rig, until

pytestmark = pytest.mark.timeout(300)

# Trace -> the status its call must end with.
OUTCOMES = {"inbound_answered": "answered", "inbound_noanswer": "no_answer", "inbound_busy": "busy",
            "queue_ringall_answered": "answered", "outbound_answered": "answered",
            "sip_attended_transfer": "answered"}
CALLS = 24


async def play_calls(r: Rig, restart: asyncio.Event) -> list[tuple[str, LiveCall]]:
    played = []
    names = list(OUTCOMES)
    for i in range(CALLS):
        name = names[i % len(names)]
        operators = ["101", "102"] if name in ("queue_ringall_answered", "sip_attended_transfer") else ["103"]
        played.append((name, r.play(name, operators=operators, customer=f"+7916555{i:04d}")))
        if i == CALLS // 3:
            restart.set()
        await asyncio.sleep(0.15)
    return played


async def test_postgres_restarts_under_a_running_bridge_and_nothing_is_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    with private_postgres() as pg:
        admin = create_async_engine(pg.url, isolation_level="AUTOCOMMIT")
        async with admin.connect() as conn:
            await conn.execute(sa.text('CREATE DATABASE "bridge"'))
        await admin.dispose()
        settings = Settings()
        settings.server.data_dir = str(tmp_path / "var")
        settings.database.url = pg.database_url("bridge")
        engine = make_engine(settings.database.url)
        await migrate.upgrade(engine)
        try:
            async with rig(settings, engine, tmp_path, speed=4.0) as r:
                restart = asyncio.Event()
                player = asyncio.create_task(play_calls(r, restart))
                await restart.wait()
                await asyncio.to_thread(pg.restart)  # under the bridge, calls going on
                played = await player
                await until(lambda: all(call.done for _name, call in played), "every call played", 60)

                async def logged() -> dict[str, str | None]:
                    try:
                        async with engine.connect() as conn:
                            found = await list_calls(conn, limit=None)
                    except (OSError, sa.exc.SQLAlchemyError):
                        return {}
                    return {c.linkedid: c.status for c in found if c.ended_at is not None}

                wanted = {r.linkedid(call): OUTCOMES[name] for name, call in played}
                for _ in range(600):
                    if set(await logged()) >= set(wanted):
                        break
                    await asyncio.sleep(0.1)
                async def unfinished() -> list[tuple[int, str, str | None]]:
                    async with engine.connect() as conn:
                        rows = await conn.execute(sa.select(
                            recordings.c.call_id, recordings.c.state, recordings.c.last_error).where(
                            recordings.c.state.in_(["recording", "processing"])))
                        return [(int(x.call_id), str(x.state), x.last_error) for x in rows]

                for _ in range(300):  # conversions retry (first after 0.3 s, then doubling to 0.6 s)
                    if not await unfinished():
                        break
                    await asyncio.sleep(0.1)
                async with engine.connect() as conn:
                    records = await list_calls(conn, limit=None)
                # Every call once, ended, with its trace's outcome.
                assert sorted(c.linkedid for c in records) == sorted(wanted)
                assert {c.linkedid: c.status for c in records} == wanted
                assert all(c.ended_at is not None and not c.ended_during_outage for c in records)
                assert await unfinished() == []
                # The outage happened, and the pipeline waited it out.
                assert "calls.save_failed" in caplog.text or "restore_failed" in caplog.text, \
                    "the database restart was not noticed"
        finally:
            await engine.dispose()
