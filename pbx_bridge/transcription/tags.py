"""Writing transcription hits onto calls.tags (the application owns the calls table; the
recordings library calls this through the worker's tag_writer argument)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from pbx_bridge.db.schema import calls
from recordings.transcription.analytics import merge_tags


async def write_call_tags(conn: AsyncConnection, call_id: int, tags: list[str]) -> None:
    """Replace the call's transcription tags, keeping tags set by others. A call that does not
    exist (a transcript for a file outside the call log) is left alone."""
    row = (await conn.execute(sa.select(calls.c.tags).where(calls.c.id == call_id))).first()
    if row is None:
        return
    merged = merge_tags(row.tags or [], tags)
    if merged != (row.tags or []):
        await conn.execute(sa.update(calls).where(calls.c.id == call_id).values(tags=merged))
