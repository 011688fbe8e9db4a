"""The durable transcription job queue (table transcription_jobs), on SQLite and PostgreSQL.

A worker claims a job with a lease (`lease_owner`, `lease_expires_at`) and renews it with
heartbeats. A worker that dies stops heartbeating, the lease expires and another worker claims the
job again. Every state change after the claim is conditional on still holding the lease, so a
worker that lost its lease can never complete (or fail) a job another worker owns: each job is
completed exactly once.

Claiming is one statement: on PostgreSQL the candidate row is picked with
`FOR UPDATE SKIP LOCKED` (concurrent workers on several machines each get a different job, no
waiting); SQLite ignores that clause and serialises writers, so the same
`UPDATE ... WHERE id = (SELECT ...) RETURNING` is atomic there too.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from recordings.transcription.schema import transcription_jobs as jobs

MAX_BACKOFF_SECONDS = 3600.0


@dataclass(frozen=True)
class Job:
    id: int
    call_id: int
    wav_path: str
    state: str
    attempts: int
    lease_owner: str | None
    lease_expires_at: datetime | None
    heartbeat_at: datetime | None
    next_attempt_at: datetime
    last_error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    def to_dict(self) -> dict[str, Any]:
        def iso(value: datetime | None) -> str | None:
            return value.isoformat() if value else None

        return {"id": self.id, "call_id": self.call_id, "state": self.state,
                "attempts": self.attempts, "last_error": self.last_error,
                "created_at": iso(self.created_at), "started_at": iso(self.started_at),
                "finished_at": iso(self.finished_at), "next_attempt_at": iso(self.next_attempt_at)}


def _job(row: Any) -> Job:
    return Job(**{name: getattr(row, name) for name in Job.__dataclass_fields__})


def _now(now: datetime | None) -> datetime:
    return now or datetime.now(UTC)


def backoff_seconds(base: float, attempts: int) -> float:
    """Delay before attempt `attempts + 1`: base, 2*base, 4*base ... capped at an hour."""
    return float(min(MAX_BACKOFF_SECONDS, base * 2 ** max(0, attempts - 1)))


async def enqueue(conn: AsyncConnection, call_id: int, wav_path: str, *,
                  now: datetime | None = None) -> int:
    """Queue a job for the call's recording; an already queued or running job for the same call
    and file is reused (enqueueing twice does not transcribe twice)."""
    now = _now(now)
    existing = (await conn.execute(
        sa.select(jobs.c.id).where(jobs.c.call_id == call_id, jobs.c.wav_path == wav_path,
                                   jobs.c.state.in_(("queued", "running")))
    )).scalar()
    if existing is not None:
        return int(existing)
    result = await conn.execute(sa.insert(jobs).values(
        call_id=call_id, wav_path=wav_path, state="queued", attempts=0, next_attempt_at=now,
        created_at=now, updated_at=now,
    ).returning(jobs.c.id))
    return int(result.scalar_one())


async def reap_exhausted(engine: AsyncEngine, max_attempts: int, *, now: datetime | None = None) -> int:
    """Jobs whose worker died (lease expired) on their last allowed attempt become failed."""
    now = _now(now)
    exhausted = sa.and_(jobs.c.state == "running", jobs.c.lease_expires_at < now,
                        jobs.c.attempts >= max_attempts)
    # Read first: idle workers poll, and a write per poll would contend for SQLite's one writer.
    async with engine.connect() as conn:
        if (await conn.execute(sa.select(jobs.c.id).where(exhausted).limit(1))).first() is None:
            return 0
    async with engine.begin() as conn:
        result = await conn.execute(
            sa.update(jobs)
            .where(exhausted)
            .values(state="failed", finished_at=now, updated_at=now, lease_owner=None,
                    lease_expires_at=None,
                    last_error=sa.func.coalesce(jobs.c.last_error + "; ", "")
                    + "worker lost mid-job (lease expired) on the last attempt")
        )
    return int(result.rowcount or 0)


async def claim(engine: AsyncEngine, owner: str, lease_seconds: float, *,
                now: datetime | None = None) -> Job | None:
    """Take the next runnable job (queued and due, or running with an expired lease)."""
    now = _now(now)
    runnable = sa.or_(
        sa.and_(jobs.c.state == "queued", jobs.c.next_attempt_at <= now),
        sa.and_(jobs.c.state == "running", jobs.c.lease_expires_at < now),
    )
    candidate = (
        sa.select(jobs.c.id).where(runnable).order_by(jobs.c.next_attempt_at, jobs.c.id).limit(1)
        .with_for_update(skip_locked=True).scalar_subquery()
    )
    statement = (
        sa.update(jobs)
        # The state test again: on PostgreSQL the row may have changed between the pick and
        # the update (it is re-checked under the lock), on SQLite it cannot, at no cost.
        .where(jobs.c.id == candidate, runnable)
        .values(state="running", lease_owner=owner,
                lease_expires_at=now + timedelta(seconds=lease_seconds), heartbeat_at=now,
                attempts=jobs.c.attempts + 1, started_at=now, updated_at=now)
        .returning(*jobs.c)
    )
    async with engine.connect() as conn:  # read first, as in reap_exhausted
        if (await conn.execute(sa.select(jobs.c.id).where(runnable).limit(1))).first() is None:
            return None
    async with engine.begin() as conn:
        row = (await conn.execute(statement)).first()
    return _job(row) if row is not None else None


def _held(job_id: int, owner: str) -> sa.ColumnElement[bool]:
    return sa.and_(jobs.c.id == job_id, jobs.c.state == "running", jobs.c.lease_owner == owner)


async def heartbeat(engine: AsyncEngine, job_id: int, owner: str, lease_seconds: float, *,
                    now: datetime | None = None) -> bool:
    """Extend the lease; False if this worker no longer holds it (it must stop the job)."""
    now = _now(now)
    async with engine.begin() as conn:
        result = await conn.execute(sa.update(jobs).where(_held(job_id, owner)).values(
            heartbeat_at=now, lease_expires_at=now + timedelta(seconds=lease_seconds), updated_at=now))
    return bool(result.rowcount)


async def complete(conn: AsyncConnection, job_id: int, owner: str, *,
                   now: datetime | None = None) -> bool:
    """Mark done inside the caller's transaction (with the transcript); False if the lease was
    lost, and then the caller must roll back."""
    now = _now(now)
    result = await conn.execute(sa.update(jobs).where(_held(job_id, owner)).values(
        state="done", finished_at=now, updated_at=now, lease_owner=None, lease_expires_at=None))
    return bool(result.rowcount)


async def fail(engine: AsyncEngine, job_id: int, owner: str, error: str, *, retry: bool,
               max_attempts: int, backoff_base: float, now: datetime | None = None) -> str | None:
    """Record the error; queue a retry after a backoff, or fail for good when retrying cannot
    help or the attempts are used up. Returns the new state, None if the lease was lost."""
    now = _now(now)
    async with engine.begin() as conn:
        row = (await conn.execute(sa.select(jobs.c.attempts).where(_held(job_id, owner)))).first()
        if row is None:
            return None
        attempts = int(row.attempts)
        if retry and attempts < max_attempts:
            values: dict[str, Any] = {
                "state": "queued",
                "next_attempt_at": now + timedelta(seconds=backoff_seconds(backoff_base, attempts))}
        else:
            values = {"state": "failed", "finished_at": now}
        await conn.execute(sa.update(jobs).where(_held(job_id, owner)).values(
            last_error=error[:2000], updated_at=now, lease_owner=None, lease_expires_at=None, **values))
    return str(values["state"])


async def release(engine: AsyncEngine, job_id: int, owner: str, *, now: datetime | None = None) -> bool:
    """Give a job back untouched (the worker is shutting down): the attempt does not count."""
    now = _now(now)
    async with engine.begin() as conn:
        result = await conn.execute(sa.update(jobs).where(_held(job_id, owner)).values(
            state="queued", attempts=jobs.c.attempts - 1, next_attempt_at=now, updated_at=now,
            lease_owner=None, lease_expires_at=None))
    return bool(result.rowcount)


async def get_job(conn: AsyncConnection, job_id: int) -> Job | None:
    row = (await conn.execute(sa.select(jobs).where(jobs.c.id == job_id))).first()
    return _job(row) if row is not None else None


async def latest_job_for_call(conn: AsyncConnection, call_id: int) -> Job | None:
    row = (await conn.execute(
        sa.select(jobs).where(jobs.c.call_id == call_id).order_by(jobs.c.id.desc()).limit(1)
    )).first()
    return _job(row) if row is not None else None


async def job_states(conn: AsyncConnection, call_ids: Iterable[int]) -> dict[int, str]:
    """The state of each call's latest job, for showing on call lists."""
    ids = list(call_ids)
    if not ids:
        return {}
    latest = (sa.select(sa.func.max(jobs.c.id)).where(jobs.c.call_id.in_(ids))
              .group_by(jobs.c.call_id).scalar_subquery())
    rows = await conn.execute(sa.select(jobs.c.call_id, jobs.c.state).where(jobs.c.id.in_(latest)))
    return {int(r.call_id): str(r.state) for r in rows}


async def finished_since(conn: AsyncConnection, since: datetime, limit: int = 500) -> list[Job]:
    """Jobs that reached done/failed at or after `since`, in order of finishing: used to announce
    results, including those of workers on other machines."""
    rows = await conn.execute(
        sa.select(jobs).where(jobs.c.state.in_(("done", "failed")), jobs.c.finished_at >= since)
        .order_by(jobs.c.finished_at, jobs.c.id).limit(limit))
    return [_job(r) for r in rows]
