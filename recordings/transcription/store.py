"""Reading and writing transcripts (one per call)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from recordings.transcription.dialog import Turn
from recordings.transcription.pipeline import TranscriptResult
from recordings.transcription.schema import transcripts


@dataclass(frozen=True)
class StoredTranscript:
    call_id: int
    job_id: int | None
    turns: list[Turn]
    plain_text: str
    analytics: dict[str, Any]
    language: str
    model: str
    duration: float
    created_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {"call_id": self.call_id, "language": self.language, "model": self.model,
                "duration_seconds": self.duration, "created_at": self.created_at.isoformat(),
                "turns": [t.to_dict() for t in self.turns], "text": self.plain_text,
                "analytics": self.analytics}


async def save_transcript(conn: AsyncConnection, call_id: int, job_id: int | None,
                          result: TranscriptResult) -> None:
    """Replace the call's transcript (a re-run overwrites the previous one)."""
    await conn.execute(sa.delete(transcripts).where(transcripts.c.call_id == call_id))
    await conn.execute(sa.insert(transcripts).values(
        call_id=call_id, job_id=job_id, turns=[t.to_dict() for t in result.turns],
        plain_text=result.plain_text, analytics=result.analytics, language=result.language,
        model=result.model, duration_seconds=result.duration, created_at=datetime.now(UTC),
    ))


async def load_transcript(conn: AsyncConnection, call_id: int) -> StoredTranscript | None:
    row = (await conn.execute(sa.select(transcripts).where(transcripts.c.call_id == call_id))).first()
    if row is None:
        return None
    return StoredTranscript(
        call_id=row.call_id, job_id=row.job_id, turns=[Turn.from_dict(t) for t in row.turns],
        plain_text=row.plain_text, analytics=row.analytics, language=row.language, model=row.model,
        duration=row.duration_seconds, created_at=row.created_at,
    )
