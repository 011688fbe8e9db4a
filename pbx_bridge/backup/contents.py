"""What a backup holds besides the database file, read from the database being backed up (the
snapshot, so the list and the dump agree): the stored recordings' files and a SHA-256 of each
transcript, and the counts the restore checks."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from crm_sync.schema import clients
from pbx_bridge.db.schema import calls
from recordings.schema import recordings
from recordings.transcription.schema import transcripts


@dataclass(frozen=True)
class StoredFile:
    call_id: int
    relpath: str  # relative to the recordings dir, as the database keeps it
    sha256: str | None  # the WAV's, as recorded when it was verified; None for encoded copies
    compressed: bool


def transcript_digest(row: Any) -> str:
    """A transcript's content, canonically serialised (the same on SQLite and PostgreSQL)."""
    content = {"call_id": row.call_id, "turns": row.turns, "plain_text": row.plain_text,
               "analytics": row.analytics, "language": row.language, "model": row.model,
               "duration_seconds": row.duration_seconds}
    text = json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


async def stored_files(conn: AsyncConnection) -> list[StoredFile]:
    rows = (await conn.execute(
        sa.select(recordings.c.call_id, recordings.c.stored_path, recordings.c.sha256,
                  recordings.c.compressed_path)
        .where(recordings.c.stored_path.is_not(None), recordings.c.state != "deleted")
        .order_by(recordings.c.call_id))).all()
    files = []
    for row in rows:
        files.append(StoredFile(row.call_id, row.stored_path, row.sha256, False))
        if row.compressed_path:
            files.append(StoredFile(row.call_id, row.compressed_path, None, True))
    return files


async def transcript_digests(conn: AsyncConnection) -> dict[int, str]:
    rows = (await conn.execute(sa.select(transcripts).order_by(transcripts.c.call_id))).all()
    return {row.call_id: transcript_digest(row) for row in rows}


async def counts(conn: AsyncConnection) -> dict[str, int]:
    result = {}
    for name, table in (("calls", calls), ("clients", clients), ("recordings", recordings),
                        ("transcripts", transcripts)):
        result[name] = int((await conn.execute(sa.select(sa.func.count()).select_from(table)))
                           .scalar_one())
    return result
