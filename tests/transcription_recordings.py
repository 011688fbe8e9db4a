"""Rows in the recordings feature's `recordings` table for transcription tests. That feature is
developed in another branch: where its table exists (after the merge) rows go into it, else a
table with the same columns (the ones it requires) is created for the test and dropped after."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

# (recording id, call id, state, stored_path)
RecordingRow = tuple[int, int, str, str | None]


@asynccontextmanager
async def recordings_rows(engine: AsyncEngine, rows: list[RecordingRow]) -> AsyncIterator[None]:
    timestamp = "TIMESTAMP WITH TIME ZONE" if engine.dialect.name == "postgresql" else "DATETIME"
    async with engine.begin() as conn:
        existed = await conn.run_sync(lambda c: sa.inspect(c).has_table("recordings"))
        if not existed:
            await conn.execute(sa.text(
                "CREATE TABLE recordings (id INTEGER PRIMARY KEY, call_id INTEGER NOT NULL, "
                "pbx VARCHAR(64) NOT NULL, linkedid VARCHAR(128) NOT NULL, state VARCHAR(16) NOT NULL, "
                "rule VARCHAR(96) NOT NULL DEFAULT 'default', segments JSON NOT NULL, "
                f"stored_path VARCHAR(512), created_at {timestamp} NOT NULL, "
                f"updated_at {timestamp} NOT NULL)"))
        table = await conn.run_sync(lambda c: sa.Table("recordings", sa.MetaData(), autoload_with=c))
        now = datetime.now(UTC)
        await conn.execute(sa.insert(table), [
            {"id": rid, "call_id": call_id, "pbx": "main", "linkedid": f"l{call_id}", "state": state,
             "segments": [], "stored_path": path, "created_at": now, "updated_at": now}
            for rid, call_id, state, path in rows])
    try:
        yield
    finally:
        async with engine.begin() as conn:
            if existed:
                await conn.execute(sa.delete(table).where(table.c.id.in_([r[0] for r in rows])))
            else:
                await conn.execute(sa.text("DROP TABLE recordings"))
