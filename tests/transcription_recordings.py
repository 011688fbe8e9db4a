"""Rows in the recordings feature's `recordings` table for transcription tests (the table as the
migrations made it)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from recordings.schema import recordings

# (recording id, call id, state, stored_path)
RecordingRow = tuple[int, int, str, str | None]


@asynccontextmanager
async def recordings_rows(engine: AsyncEngine, rows: list[RecordingRow]) -> AsyncIterator[None]:
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        await conn.execute(sa.insert(recordings), [
            {"id": rid, "call_id": call_id, "pbx": "main", "linkedid": f"l{call_id}", "state": state,
             "segments": [], "stored_path": path, "created_at": now, "updated_at": now}
            for rid, call_id, state, path in rows])
    try:
        yield
    finally:
        async with engine.begin() as conn:
            await conn.execute(sa.delete(recordings).where(recordings.c.id.in_([r[0] for r in rows])))
