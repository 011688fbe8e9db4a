"""Shared by the native CRM connector tests: the bridge as `serve` assembles it (HTTP API,
embedded simulator over TCP, call pipeline, recordings, in-process transcription), pointed at a
contract server, and ways to wait for what it sends."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from crm_sync import outbox
from crm_sync.schema import outbox as outbox_table
from pbx_bridge.assembly import Bridge, assemble
from pbx_bridge.calls.record import CallRecord
from pbx_bridge.config import Settings
from recordings import catalog
from recordings.storage import resolve_stored
from recordings.transcription.store import load_transcript
from tests.e2e_support import all_calls, free_port, wait_until

DID_SOURCES = {"+74951110000": "Yandex Direct", "+74951112222": "website",
               "+74951113333": "Avito"}


def configure(settings: Settings, *, transcribe: bool = True) -> None:
    settings.server.port = free_port()
    settings.server.public_url = f"http://127.0.0.1:{settings.server.port}"
    settings.simulator.port = 0
    settings.simulator.calls_per_second = 0  # only the traces we replay
    settings.recordings.policy = "all"
    settings.recordings.first_attempt_delay_seconds = 0.2
    settings.transcription.in_process = transcribe
    settings.transcription.workers = 1
    settings.transcription.poll_seconds = 0.2
    settings.crm.did_sources = dict(DID_SOURCES)
    settings.crm.outbox_poll_interval = 0.2
    settings.crm.outbox_retry_base = 0.2
    settings.crm.outbox_retry_max = 2.0


@asynccontextmanager
async def running(settings: Settings, engine: AsyncEngine,
                  adjust: Callable[[Settings], None] | None = None, *,
                  originate_speed: float = 4.0) -> AsyncIterator[Bridge]:
    if adjust is not None:
        adjust(settings)
    bridge = assemble(settings, engine)
    assert bridge.simulator_settings is not None
    bridge.simulator_settings.speed = originate_speed  # calls placed by click-to-call
    await bridge.start()
    try:
        await wait_until(lambda: bridge.runtime.pbx["simulator"].connected, 10, "logged in")
        yield bridge
    finally:
        await bridge.stop()


async def pending(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return (await outbox.counts(conn))["pending"]


async def dead(engine: AsyncEngine) -> list[outbox.OutboxItem]:
    async with engine.connect() as conn:
        return await outbox.list_items(conn, "dead")


async def delivered_everything(engine: AsyncEngine, within: float = 180.0) -> None:
    async def done() -> bool:
        return await pending(engine) == 0
    await wait_until(done, within, "every outbox item delivered")


async def replay(bridge: Bridge, trace: Path, speed: float) -> CallRecord:
    """Replays one trace; returns its call once ended and finished by the CRM stage."""
    sim = bridge.simulator
    assert sim is not None
    before = {c.linkedid for c in await all_calls(bridge.runtime.engine)}
    await sim.replay([trace], speed=speed)
    return await ended_call(bridge.runtime.engine, lambda c: c.linkedid not in before)


async def ended_call(engine: AsyncEngine, which: Callable[[CallRecord], bool],
                     within: float = 20.0) -> CallRecord:
    found: list[CallRecord] = []

    async def ended() -> bool:
        calls = [c for c in await all_calls(engine) if which(c) and c.ended_at is not None]
        calls = [c for c in calls if c.direction != "internal"]
        found[:] = calls
        if not calls:
            return False
        async with engine.connect() as conn:
            done = (await conn.execute(sa.text("SELECT crm_done_at FROM calls WHERE id = :i"),
                                       {"i": calls[0].id})).scalar()
        return done is not None

    await wait_until(ended, within, "the call ended and its CRM work done")
    return found[0]


async def recording_bytes(bridge: Bridge, call_id: int) -> bytes | None:
    service = bridge.recordings
    async with bridge.runtime.engine.connect() as conn:
        row = await catalog.get_by_call(conn, call_id)
    if row is None or not row.playable or row.stored_path is None:
        return None
    return resolve_stored(service.locations.recordings_dir, row.stored_path).read_bytes()


async def transcript_turns(engine: AsyncEngine, call_id: int) -> list[Any] | None:
    async with engine.connect() as conn:
        stored = await load_transcript(conn, call_id)
    return None if stored is None else list(stored.turns)


async def items_of(engine: AsyncEngine, key: str) -> list[tuple[str, bool, bool]]:
    """(kind, delivered, dead) of a client key's items, in order."""
    async with engine.connect() as conn:
        rows = (await conn.execute(sa.select(outbox_table.c.kind, outbox_table.c.delivered_at,
                                             outbox_table.c.dead)
                                   .where(outbox_table.c.client_key == key)
                                   .order_by(outbox_table.c.id))).all()
    return [(r.kind, r.delivered_at is not None, bool(r.dead)) for r in rows]


def strings(value: Any) -> Any:
    """Parameters as the portal sees them in a batch (PHP: every value a string)."""
    if isinstance(value, dict):
        return {str(k): strings(v) for k, v in value.items()}
    if isinstance(value, list):
        return [strings(v) for v in value]
    if isinstance(value, bool):
        return "1" if value else "0"
    return "" if value is None else str(value)
