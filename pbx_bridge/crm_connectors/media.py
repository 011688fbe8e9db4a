"""A call's recording and transcript as the native connectors ask for them (crm_sync.call_media):
read from the recordings feature's tables when an item is sent, so what is sent is what exists
then (a recording converted meanwhile, a transcript finished meanwhile)."""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from crm_sync.call_media import Missing, RecordingFile, TranscriptTurn, Waiting
from pbx_bridge.recording.http import SIGNED_PREFIX
from pbx_bridge.recording.service import RecordingService
from recordings import catalog, signing
from recordings.storage import UnsafePath, resolve_stored
from recordings.transcription.schema import transcription_jobs
from recordings.transcription.store import load_transcript

WAITING_STATES = ("recording", "processing")


class StoredCallMedia:
    def __init__(self, engine: AsyncEngine, recordings: RecordingService | None, *, public_url: str,
                 link_seconds: int) -> None:
        self.engine = engine
        self.recordings = recordings
        self.public_url = public_url.rstrip("/")
        self.link_seconds = link_seconds

    async def recording(self, call_id: int) -> RecordingFile | Waiting | Missing:
        if self.recordings is None:
            return Missing("recordings are not part of this bridge")
        async with self.engine.connect() as conn:
            row = await catalog.get_by_call(conn, call_id)
        if row is None:
            return Missing("the call was not recorded")
        if row.state in WAITING_STATES:
            return Waiting(f"the recording is {row.state}")
        if not row.playable or row.stored_path is None:
            return Missing(f"the recording is {row.state}")
        # An MP3 copy (recordings.compress = "mp3") is a tenth of the WAV's size: CRMs take both.
        relative, suffix = row.stored_path, "wav"
        if row.compressed_path and row.compressed_path.endswith(".mp3"):
            relative, suffix = row.compressed_path, "mp3"
        try:
            path = resolve_stored(self.recordings.locations.recordings_dir, relative)
        except UnsafePath as exc:
            return Missing(str(exc))
        return RecordingFile(path, f"call-{call_id}.{suffix}")

    async def transcript(self, call_id: int) -> list[TranscriptTurn] | Waiting | Missing:
        async with self.engine.connect() as conn:
            stored = await load_transcript(conn, call_id)
            if stored is None:
                states: list[Any] = list((await conn.execute(
                    sa.select(transcription_jobs.c.state).where(transcription_jobs.c.call_id == call_id)
                )).scalars())
        if stored is not None:
            return [TranscriptTurn(t.speaker, t.start, t.end, t.text) for t in stored.turns]
        if states and all(s == "failed" for s in states):
            return Missing("transcription failed")
        if not states:
            recording = await self.recording(call_id)
            if isinstance(recording, Missing):
                return Missing(f"nothing to transcribe: {recording.reason}")
        # Queued, running, or not queued yet (the recording is being converted): wait.
        return Waiting("the transcript is not ready")

    def recording_link(self, call_id: int) -> str | None:
        if self.recordings is None or not self.public_url:
            return None
        link = signing.sign(self.recordings.signing_key, call_id, now=time.time(),
                            ttl_seconds=self.link_seconds)
        return f"{self.public_url}{SIGNED_PREFIX}{link.token}"
