"""Transcription inside the bridge: recording.ready -> job -> in-process workers ->
transcript.ready on the bus, and GET /api/v1/calls/{id}/transcript with roles."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa
from aiohttp.test_utils import TestClient

from pbx_bridge.auth.tokens import create_token
from pbx_bridge.config import Settings
from pbx_bridge.db.engine import make_engine, make_sessionmaker
from pbx_bridge.db.schema import calls
from pbx_bridge.errors import UserError
from pbx_bridge.http.auth import Principal
from pbx_bridge.runtime import Runtime
from pbx_bridge.server.app import make_app
from pbx_bridge.transcription.http import transcript_enricher
from pbx_bridge.transcription.openapi_doc import SCHEMAS
from pbx_bridge.transcription.service import TranscriptionService, recording_path, start_transcription
from recordings.transcription import jobs
from tests.transcription_audio import two_sources_wav
from tests.transcription_recordings import recordings_rows

PRINCIPALS = {
    "manager": Principal("token", 1, "boss", "manager"),
    "crm": Principal("token", 2, "crm", "crm"),
    "op101": Principal("user", 3, "Anna", "operator", "101"),
    "op102": Principal("user", 4, "Boris", "operator", "102"),
}


async def auth(runtime: Runtime, name: str) -> dict[str, str]:
    """Headers authenticating as PRINCIPALS[name]: a real token of the API's token store."""
    who = PRINCIPALS[name]
    async with runtime.engine.begin() as conn:
        _, token = await create_token(conn, name=name, role=who.role, extension=who.extension)
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def runtime(settings: Settings) -> AsyncIterator[Runtime]:
    settings.transcription.lease_seconds = 5.0
    settings.transcription.poll_seconds = 0.2
    settings.transcription.workers = 1
    settings.transcription.keywords = ["민박"]
    engine = make_engine(settings.database_url)
    yield Runtime(settings=settings, engine=engine, sessions=make_sessionmaker(engine))
    await engine.dispose()


@pytest.fixture
async def client(runtime: Runtime, aiohttp_client: Any) -> TestClient[Any, Any]:
    return await aiohttp_client(make_app(runtime))  # type: ignore[no-any-return]


def assert_documented(body: dict[str, Any]) -> None:
    """The response matches the endpoint's OpenAPI schema."""
    import jsonschema_rs

    schema = {"$ref": "#/components/schemas/CallTranscript", "components": {"schemas": SCHEMAS}}
    jsonschema_rs.validator_for(schema).validate(body)


async def add_call(runtime: Runtime, call_id: int, operator: str = "101",
                   operators_rung: list[str] | None = None) -> None:
    now = datetime.now(UTC)
    async with runtime.engine.begin() as conn:
        await conn.execute(sa.insert(calls).values(
            id=call_id, pbx="main", linkedid=f"l{call_id}", started_at=now, updated_at=now,
            operators_rung=operators_rung or [], transfers=[], tags=[], operator=operator))


async def next_message(subscription: Any) -> dict[str, Any]:
    message = await asyncio.wait_for(subscription.get(), 180)
    assert message is not None
    return dict(message)


@pytest.mark.vosk
async def test_recording_ready_to_transcript_ready(runtime: Runtime, client: TestClient[Any, Any],
                                                   traces: Path, tmp_path: Path) -> None:
    await add_call(runtime, 1)
    await add_call(runtime, 2)
    wav = two_sources_wav(traces, tmp_path / "call.wav", customer_offset=2.0)
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"not a wav")
    service = await start_transcription(runtime)
    assert runtime.services["transcription"] is service
    try:
        with runtime.bus.subscribe(lambda m: str(m.get("type", "")).startswith("transcript.")) as sub:
            ready = "recording.ready"
            runtime.bus.publish({"type": ready, "call_id": 1, "recording": {"wav_path": str(wav)}})
            runtime.bus.publish({"type": ready, "call_id": 2, "recording": {"path": str(broken)}})
            runtime.bus.publish({"type": "recording.ready", "recording": {}})  # ignored, logged
            ready = await next_message(sub)
            # The broken file's job fails: logged, visible on the call, not announced.
            async with runtime.engine.connect() as conn:
                broken_job = await jobs.latest_job_for_call(conn, 2)
            assert broken_job is not None
            for _ in range(600):
                async with runtime.engine.connect() as conn:
                    broken_job = await jobs.get_job(conn, broken_job.id)
                assert broken_job is not None
                if broken_job.state == "failed":
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(3 * runtime.settings.transcription.poll_seconds)
            assert sub.queue.empty()
    finally:
        await service.stop()
    assert ready["type"] == "transcript.ready" and ready["call_id"] == 1
    assert ready["extensions"] == ["101"] and ready["at"].endswith("Z")
    assert ready["transcript"]["text"] and ready["transcript"]["job_id"] == 1
    assert "turns" not in ready["transcript"]

    resp = await client.get("/api/v1/calls/1/transcript", headers=await auth(runtime, "manager"))
    assert resp.status == 200
    body = await resp.json()
    assert_documented(body)
    assert body["job"]["state"] == "done" and body["job"]["attempts"] == 1
    transcript = body["transcript"]
    assert {t["speaker"] for t in transcript["turns"]} == {"operator", "customer"}
    assert transcript["text"] and transcript["language"] == "ko"
    assert transcript["analytics"]["keyword_hits"][0]["term"] == "민박"
    assert all({"word", "start", "end", "conf"} <= set(w) for t in transcript["turns"] for w in t["words"])
    async with runtime.engine.connect() as conn:
        tags = (await conn.execute(sa.select(calls.c.tags).where(calls.c.id == 1))).scalar()
        part = (await transcript_enricher(conn, SimpleNamespace(id=1), {}))["transcript"]
    assert tags == ["keyword:민박"]
    assert part["state"] == "done" and part["text"] == transcript["text"]

    failed = await (await client.get("/api/v1/calls/2/transcript", headers=await auth(runtime, "crm"))).json()
    assert_documented(failed)
    assert failed["job"]["state"] == "failed" and failed["transcript"] is None
    assert "not a valid WAV file" in failed["job"]["last_error"]


async def test_transcript_endpoint_roles_and_states(runtime: Runtime, client: TestClient[Any, Any]) -> None:
    await add_call(runtime, 5, operator="101")
    url = "/api/v1/calls/5/transcript"
    assert (await client.get(url)).status == 401
    nothing = await client.get(url, headers=await auth(runtime, "op101"))
    assert nothing.status == 200
    assert await nothing.json() == {"call_id": 5, "job": None, "transcript": None}
    other = await client.get(url, headers=await auth(runtime, "op102"))
    # Another operator's call: "no such call", as the call endpoint answers (a 403 would tell
    # that the call exists; issue 18).
    assert other.status == 404 and (await other.json())["error"]["code"] == "not_found"
    await add_call(runtime, 6, operator="102", operators_rung=["101", "102"])
    rang = await client.get("/api/v1/calls/6/transcript", headers=await auth(runtime, "op101"))
    # It rang 101 (who sees the call) but 102 answered: 403, the words are 102's.
    assert rang.status == 403 and (await rang.json())["error"]["code"] == "forbidden"
    async with runtime.engine.begin() as conn:
        await jobs.enqueue(conn, 5, "/r/5.wav")
    queued = await (await client.get(url, headers=await auth(runtime, "manager"))).json()
    assert_documented(queued)
    assert queued["job"]["state"] == "queued" and queued["transcript"] is None
    with pytest.raises(ValueError):  # the check can fail
        assert_documented({"call_id": 5, "job": {"state": "lost"}, "transcript": None})
    # The call detail's part, through the calls API's enricher extension point.
    enrichers = runtime.services["call_enrichers"]
    assert enrichers == [transcript_enricher]
    async with runtime.engine.connect() as conn:
        part = await transcript_enricher(conn, SimpleNamespace(id=5), {})
        assert await transcript_enricher(conn, SimpleNamespace(id=6), {}) == {"transcript": None}
        assert await transcript_enricher(conn, SimpleNamespace(id=None), {}) == {"transcript": None}
    assert part["transcript"]["state"] == "queued" and part["transcript"]["text"] is None
    assert part["transcript"]["url"] == "/api/v1/calls/5/transcript"
    for missing in ("/api/v1/calls/999/transcript", "/api/v1/calls/abc/transcript",
                    "/api/v1/calls/1234567890123456789012/transcript", "/api/v1/calls/0/transcript",
                    "/api/v1/calls/2147483648/transcript", "/api/v1/calls/1096804233117785/transcript"):
        resp = await client.get(missing, headers=await auth(runtime, "manager"))
        assert resp.status == 404 and (await resp.json())["error"]["code"] == "not_found"


async def test_enqueue_and_no_workers_when_not_in_process(runtime: Runtime) -> None:
    runtime.settings.transcription.in_process = False
    service = TranscriptionService(runtime)
    await service.start()
    try:
        assert service.pool is None
        job_id = await service.enqueue(7, "/r/7.wav")
        assert await service.enqueue(7, "/r/7.wav") == job_id
        runtime.bus.publish({"type": "recording.ready", "call_id": 8, "recording": {"file": "rec/8.wav"}})
        job = await wait_for_job(runtime, 8)
        assert job.wav_path == str((runtime.settings.data_path / "rec/8.wav").resolve())
        # As the recordings feature publishes it: no path; its recordings table has the file.
        await add_call(runtime, 9)
        async with recordings_rows(runtime.engine, [(1, 9, "ready", "2026/11/26/9.wav")]):
            runtime.bus.publish({"type": "recording.ready", "call_id": 9, "recording": {"id": 1}})
            job = await wait_for_job(runtime, 9)
            assert job.wav_path == str(runtime.settings.data_path / "recordings/2026/11/26/9.wav")
    finally:
        await service.stop()


async def wait_for_job(runtime: Runtime, call_id: int) -> jobs.Job:
    for _ in range(100):
        async with runtime.engine.connect() as conn:
            job = await jobs.latest_job_for_call(conn, call_id)
        if job is not None:
            return job
        await asyncio.sleep(0.05)
    raise AssertionError(f"no job queued for call {call_id}")


async def test_bad_model_dir_stops_start_up_with_one_line(runtime: Runtime, tmp_path: Path) -> None:
    runtime.settings.transcription.model_dir = str(tmp_path / "missing-model")
    with pytest.raises(UserError, match=r"^transcription: vosk model directory .* does not exist$"):
        await start_transcription(runtime)


def test_recording_path_forms(tmp_path: Path) -> None:
    assert recording_path({"recording": {"wav_path": "/a/b.wav"}}, tmp_path) == "/a/b.wav"
    assert recording_path({"recording": {"path": "x.wav"}}, tmp_path) == str(tmp_path / "x.wav")
    assert recording_path({"recording": "x"}, tmp_path) is None
    assert recording_path({}, tmp_path) is None
