"""The durable job queue on SQLite and PostgreSQL: leases, heartbeats, retries with backoff,
failure after N attempts, completion only by the lease holder."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from pbx_bridge.db.engine import make_engine
from recordings.transcription import jobs
from recordings.transcription.schema import transcription_jobs

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


async def add(engine: AsyncEngine, call_id: int, path: str = "/rec/x.wav", now: datetime = T0) -> int:
    async with engine.begin() as conn:
        return await jobs.enqueue(conn, call_id, path, now=now)


async def get(engine: AsyncEngine, job_id: int) -> jobs.Job:
    async with engine.connect() as conn:
        job = await jobs.get_job(conn, job_id)
    assert job is not None
    return job


async def test_enqueue_is_idempotent_while_active(engine: AsyncEngine) -> None:
    first = await add(engine, 1)
    assert await add(engine, 1) == first
    assert await add(engine, 1, "/rec/other.wav") != first
    job = await get(engine, first)
    assert (job.state, job.attempts, job.call_id, job.created_at) == ("queued", 0, 1, T0)


async def test_claim_lease_heartbeat_and_expiry(engine: AsyncEngine) -> None:
    job_id = await add(engine, 7)
    claimed = await jobs.claim(engine, "w1", 30, now=at(1))
    assert claimed is not None and claimed.id == job_id
    assert (claimed.state, claimed.lease_owner, claimed.attempts) == ("running", "w1", 1)
    assert claimed.lease_expires_at == at(31)
    # Nothing else to claim while the lease holds.
    assert await jobs.claim(engine, "w2", 30, now=at(20)) is None
    # The heartbeat moves the lease on; someone else's heartbeat does nothing.
    assert await jobs.heartbeat(engine, job_id, "w1", 30, now=at(25))
    assert not await jobs.heartbeat(engine, job_id, "w2", 30, now=at(25))
    assert await jobs.claim(engine, "w2", 30, now=at(40)) is None
    assert (await get(engine, job_id)).heartbeat_at == at(25)
    # w1 goes silent: once the lease expires w2 takes the job over.
    taken = await jobs.claim(engine, "w2", 30, now=at(56))
    assert taken is not None and (taken.lease_owner, taken.attempts) == ("w2", 2)
    # w1 comes back: it can neither heartbeat, nor complete, nor fail the job.
    assert not await jobs.heartbeat(engine, job_id, "w1", 30, now=at(57))
    async with engine.begin() as conn:
        assert not await jobs.complete(conn, job_id, "w1", now=at(58))
    assert await jobs.fail(engine, job_id, "w1", "x", retry=True, max_attempts=3,
                           backoff_base=10, now=at(58)) is None
    async with engine.begin() as conn:
        assert await jobs.complete(conn, job_id, "w2", now=at(60))
    done = await get(engine, job_id)
    assert (done.state, done.finished_at, done.lease_owner, done.attempts) == ("done", at(60), None, 2)
    async with engine.begin() as conn:
        assert not await jobs.complete(conn, job_id, "w2", now=at(61))  # exactly once


async def test_retry_with_backoff_then_failed_with_the_error_kept(engine: AsyncEngine) -> None:
    job_id = await add(engine, 3)
    for attempt, (start, backoff) in enumerate([(0, 10), (20, 20)], start=1):
        job = await jobs.claim(engine, "w", 60, now=at(start))
        assert job is not None and job.attempts == attempt
        state = await jobs.fail(engine, job_id, "w", f"boom {attempt}", retry=True, max_attempts=3,
                                backoff_base=10, now=at(start + 1))
        assert state == "queued"
        queued = await get(engine, job_id)
        assert queued.next_attempt_at == at(start + 1 + backoff)
        assert queued.last_error == f"boom {attempt}"
        # Not runnable before the backoff has passed.
        assert await jobs.claim(engine, "w", 60, now=at(start + backoff)) is None
    job = await jobs.claim(engine, "w", 60, now=at(100))
    assert job is not None and job.attempts == 3
    assert await jobs.fail(engine, job_id, "w", "boom 3", retry=True, max_attempts=3,
                           backoff_base=10, now=at(101)) == "failed"
    failed = await get(engine, job_id)
    assert (failed.state, failed.last_error, failed.finished_at) == ("failed", "boom 3", at(101))
    assert await jobs.claim(engine, "w", 60, now=at(10_000)) is None
    assert jobs.backoff_seconds(30, 1) == 30 and jobs.backoff_seconds(30, 20) == jobs.MAX_BACKOFF_SECONDS


async def test_permanent_error_fails_at_once(engine: AsyncEngine) -> None:
    job_id = await add(engine, 4)
    assert await jobs.claim(engine, "w", 60, now=at(0)) is not None
    assert await jobs.fail(engine, job_id, "w", "bad.wav: not a valid WAV file", retry=False,
                           max_attempts=5, backoff_base=1, now=at(1)) == "failed"
    assert (await get(engine, job_id)).attempts == 1


async def test_worker_lost_on_the_last_attempt_is_failed(engine: AsyncEngine) -> None:
    job_id = await add(engine, 5)
    for n in range(2):
        assert await jobs.claim(engine, f"w{n}", 10, now=at(100 * n)) is not None
    # Lease of the second (last allowed) attempt expires: reaped, not claimed a third time.
    assert await jobs.reap_exhausted(engine, 2, now=at(105)) == 0
    assert await jobs.reap_exhausted(engine, 2, now=at(111)) == 1
    failed = await get(engine, job_id)
    assert failed.state == "failed" and "lease expired" in (failed.last_error or "")
    assert await jobs.claim(engine, "w9", 10, now=at(200)) is None


async def test_release_gives_the_job_back_without_counting(engine: AsyncEngine) -> None:
    job_id = await add(engine, 6)
    assert await jobs.claim(engine, "w", 60, now=at(0)) is not None
    assert await jobs.release(engine, job_id, "w", now=at(5))
    job = await get(engine, job_id)
    assert (job.state, job.attempts, job.lease_owner) == ("queued", 0, None)


async def test_states_and_finished_jobs(engine: AsyncEngine) -> None:
    a = await add(engine, 10)
    await add(engine, 11)
    assert await jobs.claim(engine, "w", 60, now=at(1)) is not None
    async with engine.begin() as conn:
        assert await jobs.complete(conn, a, "w", now=at(2))
        later = await jobs.enqueue(conn, 10, "/rec/again.wav", now=at(3))
    async with engine.connect() as conn:
        assert await jobs.job_states(conn, [10, 11, 12]) == {10: "queued", 11: "queued"}
        assert (await jobs.latest_job_for_call(conn, 10)).id == later  # type: ignore[union-attr]
        assert [j.id for j in await jobs.finished_since(conn, at(0))] == [a]
        assert await jobs.finished_since(conn, at(3)) == []
        assert await jobs.job_states(conn, []) == {}


async def test_concurrent_claims_never_share_a_job(db_url: str) -> None:
    """Many workers claiming at once, each on its own connection: every job exactly once."""
    engines = [make_engine(db_url) for _ in range(6)]
    try:
        for call_id in range(20):
            await add(engines[0], call_id)

        async def worker(i: int) -> list[int]:
            got = []
            while (job := await jobs.claim(engines[i], f"w{i}", 60)) is not None:
                got.append(job.id)
            return got

        results = await asyncio.gather(*(worker(i) for i in range(6)))
        claimed = [j for r in results for j in r]
        assert sorted(claimed) == list(range(1, 21))
        async with engines[0].connect() as conn:
            owners = (await conn.execute(sa.select(sa.func.count()).where(
                transcription_jobs.c.state == "running", transcription_jobs.c.attempts == 1))).scalar()
        assert owners == 20
        if db_url.startswith("postgresql"):
            assert sum(1 for r in results if r) > 1  # really concurrent: several got work
    finally:
        for e in engines:
            await e.dispose()


@pytest.mark.parametrize("bad", [datetime(2026, 1, 1)])
async def test_naive_timestamps_are_refused(engine: AsyncEngine, bad: datetime) -> None:
    with pytest.raises(sa.exc.StatementError, match="naive datetime"):
        await add(engine, 1, now=bad)
