"""Reading and writing rows of the recordings table (SQLAlchemy Core on a connection passed in)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from recordings.mixmonitor import Segment
from recordings.schema import PLAYABLE, recordings
from recordings.storage import UnsafePath, resolve_stored
from recordings.timeline import CallTimeline


@dataclass(frozen=True)
class RecordingRow:
    id: int
    call_id: int
    pbx: str
    linkedid: str
    state: str
    rule: str
    segments: list[Segment]
    timeline: CallTimeline | None
    stored_path: str | None
    format: str | None
    channels: int | None
    sample_rate: int | None
    duration_seconds: float | None
    size_bytes: int | None
    sha256: str | None
    compressed_path: str | None
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    ready_at: datetime | None
    deleted_at: datetime | None

    @property
    def playable(self) -> bool:
        return self.state in PLAYABLE and self.stored_path is not None

    def to_dict(self) -> dict[str, Any]:
        """The public shape (API, `recording.ready`): no file system paths."""
        return {
            "id": self.id,
            "call_id": self.call_id,
            "state": self.state,
            "format": self.format,
            "channels": self.channels,
            "sample_rate": self.sample_rate,
            "duration_seconds": self.duration_seconds,
            "size_bytes": self.size_bytes,
            "sha256": self.sha256,
            "compressed": self.compressed_path is not None,
            "segments": len(self.segments),
            "attempts": self.attempts,
            "last_error": self.last_error,
            "created_at": _iso(self.created_at),
            "ready_at": _iso(self.ready_at),
            "deleted_at": _iso(self.deleted_at),
        }


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _row(mapping: sa.RowMapping) -> RecordingRow:
    data = dict(mapping)
    data["segments"] = [Segment.from_dict(s) for s in data["segments"] or []]
    data["timeline"] = CallTimeline.from_dict(data["timeline"]) if data.get("timeline") else None
    return RecordingRow(**data)


async def get_by_call(conn: AsyncConnection, call_id: int) -> RecordingRow | None:
    found = (await conn.execute(sa.select(recordings).where(recordings.c.call_id == call_id))).mappings()
    first = found.first()
    return None if first is None else _row(first)


async def get(conn: AsyncConnection, recording_id: int) -> RecordingRow | None:
    found = (await conn.execute(sa.select(recordings).where(recordings.c.id == recording_id))).mappings()
    first = found.first()
    return None if first is None else _row(first)


async def start_segment(
    conn: AsyncConnection, *, call_id: int, pbx: str, linkedid: str, rule: str, segment: Segment,
    now: datetime,
) -> RecordingRow:
    """Create the call's recording with its first segment, or add a segment (a transfer)."""
    existing = await get_by_call(conn, call_id)
    if existing is None:
        await conn.execute(recordings.insert().values(
            call_id=call_id, pbx=pbx, linkedid=linkedid, state="recording", rule=rule,
            segments=[segment.to_dict()], attempts=0, created_at=now, updated_at=now,
        ))
    else:
        segments = [s.to_dict() for s in existing.segments if s.index != segment.index]
        segments.append(segment.to_dict())
        segments.sort(key=lambda s: int(str(s["index"])))
        await conn.execute(recordings.update().where(recordings.c.id == existing.id).values(
            segments=segments, state="recording", updated_at=now,
            # A start that had failed before any segment is no longer an error once one runs.
            last_error=None if existing.state == "failed" else existing.last_error))
    row = await get_by_call(conn, call_id)
    assert row is not None
    return row


async def record_afterwards(
    conn: AsyncConnection, *, call_id: int, pbx: str, linkedid: str, rule: str,
    segments: list[Segment], now: datetime, error: str,
) -> None:
    """A call learnt of only once it was over: its files found in the spool (queued for
    conversion now), or, with no `segments`, marked `not_recorded` with the reason."""
    state = "processing" if segments else "not_recorded"
    await conn.execute(recordings.insert().values(
        call_id=call_id, pbx=pbx, linkedid=linkedid, state=state, rule=rule,
        segments=[s.to_dict() for s in segments], attempts=0,
        next_attempt_at=now if segments else None, last_error=None if segments else error,
        created_at=now, updated_at=now))


async def mark_processing(conn: AsyncConnection, call_id: int, *, now: datetime,
                          first_attempt_at: datetime, segments: list[Segment] | None = None,
                          timeline: CallTimeline | None = None) -> bool:
    """The call ended: queue its files for conversion, with the segments' Asterisk times and the
    call's timeline when known. False if it was not recording."""
    values: dict[str, Any] = {"state": "processing", "next_attempt_at": first_attempt_at,
                              "updated_at": now}
    if segments is not None:
        values["segments"] = [s.to_dict() for s in segments]
    if timeline is not None:
        values["timeline"] = timeline.to_dict()
    result = await conn.execute(
        recordings.update()
        .where(recordings.c.call_id == call_id, recordings.c.state == "recording")
        .values(**values)
    )
    return bool(result.rowcount)


async def due(conn: AsyncConnection, now: datetime, limit: int = 20) -> list[RecordingRow]:
    """Recordings waiting for a conversion attempt whose time has come, oldest first."""
    rows = (await conn.execute(
        sa.select(recordings)
        .where(recordings.c.state == "processing", recordings.c.next_attempt_at <= now)
        .order_by(recordings.c.next_attempt_at, recordings.c.id)
        .limit(limit)
    )).mappings()
    return [_row(r) for r in rows]


async def next_due_at(conn: AsyncConnection) -> datetime | None:
    value = (await conn.execute(
        sa.select(sa.func.min(recordings.c.next_attempt_at)).where(recordings.c.state == "processing")
    )).scalar()
    return value if value is None or isinstance(value, datetime) else None


async def update(conn: AsyncConnection, recording_id: int, **values: Any) -> None:
    await conn.execute(recordings.update().where(recordings.c.id == recording_id).values(**values))


RETRYABLE = ("missing", "truncated", "failed")


async def requeue(conn: AsyncConnection, call_id: int, now: datetime) -> bool:
    """Give a recording that ended badly a fresh round of attempts (e.g. the mount is back)."""
    result = await conn.execute(
        recordings.update()
        .where(recordings.c.call_id == call_id, recordings.c.state.in_(RETRYABLE))
        .values(state="processing", attempts=0, next_attempt_at=now, updated_at=now)
    )
    return bool(result.rowcount)


async def listing(conn: AsyncConnection, state: str | None, limit: int) -> list[RecordingRow]:
    query = sa.select(recordings).order_by(recordings.c.created_at.desc(), recordings.c.id.desc())
    if state is not None:
        query = query.where(recordings.c.state == state)
    return [_row(r) for r in (await conn.execute(query.limit(limit))).mappings()]


async def playable_file(conn: AsyncConnection, call_id: int, recordings_dir: Path) -> Path | None:
    """The call's WAV on disk, if it has a playable one (for transcription and other readers)."""
    row = await get_by_call(conn, call_id)
    if row is None or not row.playable or row.stored_path is None:
        return None
    try:
        return resolve_stored(recordings_dir, row.stored_path)
    except UnsafePath:
        return None
