"""Worker processes that take transcription jobs from the database themselves.

Process layout: `WorkerPool.start()` spawns one pool process (a fresh interpreter: no event loop,
no database engine, no threads inherited from the caller). It loads the vosk model once, reports
success or the one-line ModelError back, then forks N workers. Forking after the load shares the
model's ~0.5 GB copy-on-write among the workers; forking is safe there because the pool process
holds nothing but the model (vosk loads it without threads) and each worker creates its own
database engine after the fork. The pool process restarts a worker that dies; the job that worker
held is taken over by whoever claims it after its lease expires.

Each worker runs an asyncio loop: claim a job, recognise it in a thread (vosk releases the GIL)
while a heartbeat task renews the lease, then mark it done together with the transcript in one
transaction that only succeeds while the lease is still held. Because workers only need the
database, workers on several machines can serve one PostgreSQL.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from recordings.transcription import jobs
from recordings.transcription.analytics import TermLists
from recordings.transcription.pipeline import TranscriptResult, transcribe_file
from recordings.transcription.recognize import (
    BadAudio,
    Cancelled,
    ModelError,
    check_model_dir,
    load_model,
    model_language,
    model_name,
)
from recordings.transcription.store import save_transcript

log = logging.getLogger("recordings.transcription.worker")

# Writes the call's tags (from keyword/phrase hits) in the completing transaction. Supplied by
# the application, which owns the calls table; must be a module-level function (it is pickled
# by reference into the worker processes).
TagWriter = Callable[[AsyncConnection, int, list[str]], Awaitable[None]]
EngineFactory = Callable[[str], AsyncEngine]

EXIT_MODEL_ERROR = 3


@dataclass(frozen=True)
class WorkerOptions:
    database_url: str
    model_dir: str
    language: str = ""
    lease_seconds: float = 60.0
    max_attempts: int = 3
    retry_backoff_seconds: float = 30.0
    poll_seconds: float = 1.0
    terms: TermLists = field(default_factory=TermLists)
    engine_factory: EngineFactory | None = None
    tag_writer: TagWriter | None = None
    # Run first in every new process (logging set-up, for instance).
    process_init: Callable[[], None] | None = None
    # Lease owner names are "<prefix>:<pid>"; default the host name, so they are unique across
    # machines sharing one database.
    owner_prefix: str = ""

    @property
    def heartbeat_seconds(self) -> float:
        return max(0.2, self.lease_seconds / 3)


def default_worker_count(configured: int) -> int:
    """`configured`, or (0) the number of cores this process may run on."""
    if configured > 0:
        return configured
    return max(1, len(os.sched_getaffinity(0)))


class _LeaseLost(Exception):
    pass


class JobRunner:
    """The loop of one worker: one job at a time, the model loaded by the caller."""

    def __init__(self, options: WorkerOptions, model: Any, owner: str,
                 stopping: threading.Event | None = None) -> None:
        self.options = options
        self.model = model
        self.owner = owner
        self.stopping = stopping or threading.Event()
        path = Path(options.model_dir)
        self.language = model_language(path, options.language)
        self.model_label = model_name(path)
        self.processed = 0

    def _engine(self) -> AsyncEngine:
        factory = self.options.engine_factory or create_async_engine
        return factory(self.options.database_url)

    async def run(self, *, until_idle: bool = False, parent_pid: int | None = None) -> None:
        """Work until `stopping` is set (or, with until_idle, until no job is runnable)."""
        engine = self._engine()
        try:
            while not self.stopping.is_set():
                if parent_pid is not None and os.getppid() != parent_pid:
                    break  # the pool process is gone: nobody would restart or stop us
                try:
                    worked = await self.run_one(engine)
                except Exception:  # a database outage: log, wait, try again
                    log.exception("transcription.worker.error owner=%s", self.owner)
                    worked = False
                if not worked:
                    if until_idle:
                        break
                    await self._sleep(self.options.poll_seconds)
        finally:
            await engine.dispose()

    async def _sleep(self, seconds: float) -> None:
        # The stop flag is a threading.Event (set from signal handlers and read by the
        # recognition thread), so wait for it in a thread.
        await asyncio.to_thread(self.stopping.wait, seconds)

    async def run_one(self, engine: AsyncEngine) -> bool:
        await jobs.reap_exhausted(engine, self.options.max_attempts)
        job = await jobs.claim(engine, self.owner, self.options.lease_seconds)
        if job is None:
            return False
        log.info("transcription.job.claimed job=%s call=%s attempt=%s owner=%s",
                 job.id, job.call_id, job.attempts, self.owner)
        await self._process(engine, job)
        self.processed += 1
        return True

    async def _process(self, engine: AsyncEngine, job: jobs.Job) -> None:
        lost = threading.Event()
        beat = asyncio.create_task(self._heartbeat(engine, job, lost))
        try:
            result = await asyncio.to_thread(
                transcribe_file, self.model, Path(job.wav_path), self.options.terms,
                language=self.language, model_label=self.model_label,
                should_stop=lambda: lost.is_set() or self.stopping.is_set())
        except Cancelled:
            if lost.is_set():
                log.warning("transcription.job.lease_lost job=%s owner=%s", job.id, self.owner)
            else:
                await jobs.release(engine, job.id, self.owner)
            return
        except BadAudio as exc:  # retrying cannot fix the file
            await self._fail(engine, job, str(exc), retry=False)
            return
        except Exception as exc:
            await self._fail(engine, job, f"{type(exc).__name__}: {exc}", retry=True)
            return
        finally:
            beat.cancel()
        await self._complete(engine, job, result)

    async def _heartbeat(self, engine: AsyncEngine, job: jobs.Job, lost: threading.Event) -> None:
        while True:
            await asyncio.sleep(self.options.heartbeat_seconds)
            try:
                held = await jobs.heartbeat(engine, job.id, self.owner, self.options.lease_seconds)
            except Exception:  # the database may come back before the lease runs out
                log.warning("transcription.job.heartbeat_failed job=%s", job.id, exc_info=True)
                continue
            if not held:
                lost.set()
                return

    async def _fail(self, engine: AsyncEngine, job: jobs.Job, error: str, *, retry: bool) -> None:
        state = await jobs.fail(engine, job.id, self.owner, error, retry=retry,
                                max_attempts=self.options.max_attempts,
                                backoff_base=self.options.retry_backoff_seconds)
        log.warning("transcription.job.error job=%s call=%s state=%s error=%s",
                    job.id, job.call_id, state, error)

    async def _complete(self, engine: AsyncEngine, job: jobs.Job, result: TranscriptResult) -> None:
        try:
            async with engine.begin() as conn:
                if not await jobs.complete(conn, job.id, self.owner):
                    raise _LeaseLost
                await save_transcript(conn, job.call_id, job.id, result)
                if self.options.tag_writer is not None:
                    await self.options.tag_writer(conn, job.call_id, result.tags)
        except _LeaseLost:
            log.warning("transcription.job.lease_lost job=%s owner=%s", job.id, self.owner)
            return
        except Exception as exc:  # e.g. the tag writer failed: nothing was written, retry
            await self._fail(engine, job, f"saving the transcript: {type(exc).__name__}: {exc}",
                             retry=True)
            return
        log.info("transcription.job.done job=%s call=%s words=%s", job.id, job.call_id,
                 sum(len(t.words) for t in result.turns))


# --- processes -------------------------------------------------------------------------------


def _owner(options: WorkerOptions) -> str:
    return f"{options.owner_prefix or socket.gethostname()}:{os.getpid()}"


def _worker_main(options: WorkerOptions, model: Any, pool_pid: int) -> None:
    """A forked worker: its own signal handling, event loop and database engine."""
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    runner = JobRunner(options, model, _owner(options), stopping)
    asyncio.run(runner.run(parent_pid=pool_pid))


def _pool_main(options: WorkerOptions, processes: int,
               report: multiprocessing.connection.Connection) -> None:
    """The pool process: load the model once, fork the workers, keep them running."""
    if options.process_init is not None:
        options.process_init()
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    try:
        model = load_model(Path(options.model_dir))
    except ModelError as exc:
        report.send(("error", str(exc)))
        report.close()
        sys.exit(EXIT_MODEL_ERROR)
    report.send(("ready", os.getpid()))
    report.close()
    if stopping.is_set():
        return  # stopped while the model was loading: no worker to start, and none to wait for
    parent = os.getppid()
    fork = multiprocessing.get_context("fork")

    def start(slot: int) -> multiprocessing.process.BaseProcess:
        proc = fork.Process(target=_worker_main, args=(options, model, os.getpid()),
                            name=f"transcription-worker-{slot}")
        proc.start()
        log.info("transcription.worker.started slot=%s pid=%s", slot, proc.pid)
        return proc

    workers = [start(i) for i in range(processes)]
    started = [time.monotonic()] * processes
    delays = [0.0] * processes
    while not stopping.wait(0.5):
        if os.getppid() != parent:
            break  # whoever started the pool is gone
        for slot, proc in enumerate(workers):
            if proc.is_alive():
                continue
            # A worker that keeps dying right away is restarted with a growing delay.
            quick_death = time.monotonic() - started[slot] < 10
            delays[slot] = min(30.0, max(1.0, delays[slot] * 2)) if quick_death else 0.0
            log.warning("transcription.worker.exited slot=%s pid=%s code=%s restart_in=%s",
                        slot, proc.pid, proc.exitcode, delays[slot])
            if stopping.wait(delays[slot]):
                break
            workers[slot] = start(slot)
            started[slot] = time.monotonic()
    for proc in workers:
        if proc.is_alive():
            proc.terminate()
    for proc in workers:
        proc.join(timeout=max(5.0, options.lease_seconds))
        if proc.is_alive():
            proc.kill()


class WorkerPool:
    """N worker processes sharing one loaded model; start() returns once the model is loaded."""

    def __init__(self, options: WorkerOptions, processes: int) -> None:
        if processes < 1:
            raise ValueError("a worker pool needs at least one process")
        self.options = options
        self.processes = processes
        self._pool: multiprocessing.process.BaseProcess | None = None

    @property
    def pid(self) -> int | None:
        return self._pool.pid if self._pool is not None else None

    def start(self, timeout: float = 300.0) -> None:
        """Load the model in the pool process; ModelError (one line) if it cannot be loaded."""
        check_model_dir(Path(self.options.model_dir))  # fail before starting any process
        spawn = multiprocessing.get_context("spawn")
        receive, send = spawn.Pipe(duplex=False)
        pool = spawn.Process(target=_pool_main, args=(self.options, self.processes, send),
                             name="transcription-pool")
        pool.start()
        self._pool = pool  # from now on stop() can end it, even while we wait here
        send.close()
        try:
            if not receive.poll(timeout):
                raise ModelError(f"vosk model {self.options.model_dir} not loaded within {timeout:.0f} s")
            kind, detail = receive.recv()
        except EOFError:
            kind, detail = "error", f"the transcription pool process exited (code {pool.exitcode})"
        except ModelError:
            self._pool = None
            pool.kill()
            pool.join()
            raise
        finally:
            receive.close()
        if kind != "ready":
            self._pool = None
            pool.join(timeout=10)
            raise ModelError(str(detail))

    def alive(self) -> bool:
        return self._pool is not None and self._pool.is_alive()

    def stop(self, timeout: float = 60.0) -> None:
        """Ask the workers to stop; a job in progress is given back to the queue."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        if pool.is_alive():
            pool.terminate()  # SIGTERM: the pool stops its workers first
        pool.join(timeout)
        if pool.is_alive():
            pool.kill()
            pool.join()

    def wait(self) -> int | None:
        if self._pool is None:
            return None
        self._pool.join()
        return self._pool.exitcode
