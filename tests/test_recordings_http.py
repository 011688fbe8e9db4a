"""Playback over real HTTP: Range requests, who may listen, signed links, legal hold, and no
request data ever reaching the file system. On SQLite and PostgreSQL."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from aiohttp.test_utils import TestClient
from sqlalchemy.ext.asyncio import AsyncEngine
from yarl import URL

from pbx_bridge.auth.tokens import create_token
from pbx_bridge.config import Settings
from pbx_bridge.db.engine import make_sessionmaker
from pbx_bridge.db.schema import calls
from pbx_bridge.http.auth import Principal
from pbx_bridge.recording.service import RecordingService
from pbx_bridge.runtime import Runtime
from pbx_bridge.server.app import make_app
from recordings import convert, signing
from recordings.schema import recordings

SIP = "pbx-1795731456.0.raw"
TOKENS = {
    "admin": Principal("token", 1, "admin", "admin"),
    "manager": Principal("token", 2, "boss", "manager"),
    "crm": Principal("token", 3, "crm", "crm"),
    "op101": Principal("user", 4, "anna", "operator", "101"),
    "op102": Principal("user", 5, "boris", "operator", "102"),
    "op103": Principal("user", 6, "vera", "operator", "103"),
}


# Role name -> a real API token created for it (pbx_bridge.auth.tokens), per test.
REAL_TOKENS: dict[str, str] = {}


@dataclass
class Api:
    client: TestClient[Any, Any]
    engine: AsyncEngine
    service: RecordingService
    call_id: int
    wav: bytes

    async def get(self, path: str | URL, who: str | None = "manager", **headers: str) -> Any:
        if who is not None:
            headers["Authorization"] = f"Bearer {REAL_TOKENS.get(who, who)}"
        return await self.client.get(path, headers=headers)


def auth(who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {REAL_TOKENS.get(who, who)}"}


async def add_call(engine: AsyncEngine, linkedid: str, operator: str, rung: list[str],
                   state: str | None = "ready", stored: str | None = None, sha: str | None = None) -> int:
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        call_id = int((await conn.execute(calls.insert().values(
            pbx="main", linkedid=linkedid, state="ended", direction="inbound", operator=operator,
            operators_rung=rung, transfers=[], tags=[], started_at=now, updated_at=now,
        ).returning(calls.c.id))).scalar_one())
        if state is not None:
            await conn.execute(recordings.insert().values(
                call_id=call_id, pbx="main", linkedid=linkedid, state=state, segments=[],
                stored_path=stored, sha256=sha, format="wav", created_at=now, updated_at=now))
    return call_id


@pytest.fixture
async def api(settings: Settings, engine: AsyncEngine, traces: Path, tmp_path: Path,
              aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]]) -> Api:
    settings.recordings.local_spool_dir = str(tmp_path / "spool")
    runtime = Runtime(settings=settings, engine=engine, sessions=make_sessionmaker(engine))
    service = RecordingService(runtime)
    runtime.services["recordings"] = service
    pcm, _ = convert.read_stereo_raw(traces / "recordings" / SIP)
    call_id = await add_call(engine, "pbx-1795731456.0", "101", ["101"], state=None)
    rel = f"2026/11/26/{call_id}.wav"
    info = convert.write_wav([pcm], service.locations.recordings_dir / rel)
    async with engine.begin() as conn:
        now = datetime.now(UTC)
        await conn.execute(recordings.insert().values(
            call_id=call_id, pbx="main", linkedid="pbx-1795731456.0", state="ready", segments=[],
            stored_path=rel, sha256=info.sha256, size_bytes=info.size_bytes, format="wav",
            created_at=now, updated_at=now, ready_at=now))
    REAL_TOKENS.clear()
    async with engine.begin() as conn:
        for who, principal in TOKENS.items():
            _, REAL_TOKENS[who] = await create_token(
                conn, name=principal.name, role=principal.role, extension=principal.extension)
    app = make_app(runtime)
    client = await aiohttp_client(app)
    return Api(client, engine, service, call_id, info.path.read_bytes())


async def test_whole_file(api: Api) -> None:
    resp = await api.get(f"/api/v1/calls/{api.call_id}/recording")
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "audio/wav"
    assert resp.headers["Accept-Ranges"] == "bytes"
    assert int(resp.headers["Content-Length"]) == len(api.wav)
    stored = api.service.locations.recordings_dir / f"2026/11/26/{api.call_id}.wav"
    assert resp.headers["ETag"] == f'"{convert.sha256_of(stored)}"'
    assert await resp.read() == api.wav
    head = await api.client.head(f"/api/v1/calls/{api.call_id}/recording", headers=auth("manager"))
    assert head.status == 200 and int(head.headers["Content-Length"]) == len(api.wav)
    assert await head.read() == b""


@pytest.mark.parametrize(("header", "first", "last"), [
    ("bytes=0-43", 0, 43),  # the WAV header: what a player reads first
    ("bytes=1000-1999", 1000, 1999),  # the middle
    ("bytes=-500", None, None),  # the last 500 bytes
    ("bytes=150000-", 150000, None),  # open-ended
])
async def test_ranges(api: Api, header: str, first: int | None, last: int | None) -> None:
    size = len(api.wav)
    start = size - 500 if first is None else first
    end = size - 1 if last is None else last
    resp = await api.get(f"/api/v1/calls/{api.call_id}/recording", Range=header)
    assert resp.status == 206
    assert resp.headers["Content-Range"] == f"bytes {start}-{end}/{size}"
    body = await resp.read()
    assert body == api.wav[start: end + 1]
    assert int(resp.headers["Content-Length"]) == len(body)
    if first == 0:
        assert body.startswith(b"RIFF") and body[8:12] == b"WAVE"


@pytest.mark.parametrize("header", ["bytes=999999-", "bytes=500-100", "bytes=abc", "pages=1-2", "bytes=-0"])
async def test_unsatisfiable_range_is_416(api: Api, header: str) -> None:
    resp = await api.get(f"/api/v1/calls/{api.call_id}/recording", Range=header)
    assert resp.status == 416
    assert resp.headers["Content-Range"] == f"bytes */{len(api.wav)}"
    assert (await resp.json())["error"]["code"] == "range_not_satisfiable"


async def test_stale_if_range_gets_the_whole_file(api: Api) -> None:
    resp = await api.get(f"/api/v1/calls/{api.call_id}/recording", Range="bytes=0-9", **{"If-Range": '"old"'})
    assert resp.status == 200 and await resp.read() == api.wav


async def test_who_may_listen(api: Api) -> None:
    path = f"/api/v1/calls/{api.call_id}/recording"
    assert (await api.get(path, who=None)).status == 401
    assert (await api.get(path, who="nobody")).status == 401
    for who in ("admin", "manager", "crm", "op101"):
        assert (await api.get(path, who=who)).status == 200, who
    resp = await api.get(path, who="op102")  # another operator's call: as if it did not exist
    assert resp.status == 404
    assert (await resp.json())["error"]["code"] == "not_found"
    rung = await add_call(api.engine, "x-rung", "101", ["102", "101"], state="processing")
    # 102 was rung for that call: may see it (it is still being converted: 409).
    resp = await api.get(f"/api/v1/calls/{rung}/recording", who="op102")
    assert resp.status == 409 and resp.headers["Retry-After"] == "5"
    assert (await api.get(f"/api/v1/calls/{rung}/recording", who="op103")).status == 404


async def test_states_without_audio(api: Api) -> None:
    gone = await add_call(api.engine, "x-deleted", "101", ["101"], state="deleted", stored="2026/01/01/1.wav")
    assert (await api.get(f"/api/v1/calls/{gone}/recording")).status == 410
    none = await add_call(api.engine, "x-none", "101", ["101"], state=None)
    resp = await api.get(f"/api/v1/calls/{none}/recording")
    assert resp.status == 404 and (await resp.json())["error"]["code"] == "recording_not_found"
    missing = await add_call(api.engine, "x-missing", "101", ["101"], state="missing")
    assert (await api.get(f"/api/v1/calls/{missing}/recording")).status == 404
    assert (await api.get("/api/v1/calls/999999/recording")).status == 404
    lost = await add_call(api.engine, "x-lost", "101", ["101"], state="ready", stored="2026/01/01/404.wav")
    resp = await api.get(f"/api/v1/calls/{lost}/recording")
    assert resp.status == 404 and (await resp.json())["error"]["code"] == "recording_file_missing"


@pytest.mark.parametrize("path", [
    "/api/v1/calls/..%2F..%2F..%2Fetc%2Fpasswd/recording",
    "/api/v1/calls/1%2F..%2F..%2Fetc%2Fpasswd/recording",
    "/api/v1/calls/%2Fetc%2Fpasswd/recording",
    "/api/v1/calls/-1/recording",
    "/api/v1/calls/0/recording",
    "/api/v1/calls/1.0/recording",
    "/api/v1/calls/99999999999999999999999/recording",
    "/api/v1/calls/1/recording/..%2F..%2F..%2Fetc%2Fpasswd",
    "/api/v1/recordings/signed/..%2F..%2F..%2Fetc%2Fpasswd",
    "/api/v1/recordings/signed/%2Fetc%2Fpasswd",
])
async def test_nothing_from_the_request_becomes_a_path(api: Api, path: str) -> None:
    resp = await api.get(URL(path, encoded=True))
    assert resp.status in (400, 403, 404), resp.status
    assert b"root:" not in await resp.read()


@pytest.mark.parametrize("call_id", ["1096804233117785", "2147483648", "0"])
async def test_ids_beyond_the_database_range_are_not_found(api: Api, call_id: str) -> None:
    # Found by schemathesis: a 64-bit id used to reach PostgreSQL's INTEGER column (500).
    for method, path in (("GET", f"/api/v1/calls/{call_id}/recording"),
                         ("POST", f"/api/v1/calls/{call_id}/recording/link"),
                         ("POST", f"/api/v1/calls/{call_id}/legal-hold")):
        resp = await api.client.request(method, path, headers=auth("manager"), json={"hold": True})
        assert resp.status == 404, (method, path, resp.status)


async def test_a_tampered_stored_path_is_refused(api: Api) -> None:
    async with api.engine.begin() as conn:
        await conn.execute(recordings.update().where(recordings.c.call_id == api.call_id)
                           .values(stored_path="../../../../../../etc/passwd"))
    resp = await api.get(f"/api/v1/calls/{api.call_id}/recording")
    assert resp.status == 404
    assert b"root:" not in await resp.read()


HUGE = "9" * 5000  # beyond int()'s 4,300-digit limit: a ValueError (500) before issue 18


async def test_a_range_of_thousands_of_digits_is_a_clean_answer(
        api: Api, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    link = signing.sign(api.service.signing_key, api.call_id, now=time.time(), ttl_seconds=60)
    size = len(api.wav)
    for path, who in ((f"/api/v1/calls/{api.call_id}/recording", "manager"),
                      (f"/api/v1/recordings/signed/{link.token}", None)):  # no token: the link
        resp = await api.get(path, who, Range=f"bytes={HUGE}-")
        assert resp.status == 416 and resp.headers["Content-Range"] == f"bytes */{size}"
        assert (await resp.json())["error"]["code"] == "range_not_satisfiable"
        resp = await api.get(path, who, Range=f"bytes=0-{HUGE}")  # past the end: up to the end
        assert resp.status == 206 and resp.headers["Content-Range"] == f"bytes 0-{size - 1}/{size}"
        resp = await api.get(path, who, Range=f"bytes=-{HUGE}")  # more than the file: all of it
        assert resp.status == 206 and await resp.read() == api.wav
        resp = await api.get(path, who, Range="bytes=\u0661-")  # another script's digit
        assert resp.status == 416
    assert "Traceback" not in caplog.text
    assert not [r for r in caplog.records if r.exc_info]


async def test_a_signed_link_is_accepted_only_as_it_was_issued(api: Api) -> None:
    link = signing.sign(api.service.signing_key, api.call_id, now=time.time(), ttl_seconds=60)
    call, expires, sig = link.token.split(".")
    assert (await api.client.get(f"/api/v1/recordings/signed/{link.token}")).status == 200
    for token in (f"{call}.0{expires}.{sig}", f"{call}.00{expires}.{sig}", f"0{call}.{expires}.{sig}"):
        resp = await api.client.get(f"/api/v1/recordings/signed/{token}")
        assert resp.status == 403 and (await resp.json())["error"]["code"] == "link_malformed"


async def test_signed_links(api: Api) -> None:
    resp = await api.client.post(f"/api/v1/calls/{api.call_id}/recording/link", headers=auth("crm"))
    assert resp.status == 201
    body = await resp.json()
    url = URL(body["url"])
    assert url.path.startswith("/api/v1/recordings/signed/")
    assert datetime.fromisoformat(body["expires_at"]) > datetime.now(UTC)
    # No bearer token: the signature is the credential; Range works too.
    plain = await api.client.get(url.path)
    assert plain.status == 200 and await plain.read() == api.wav
    part = await api.client.get(url.path, headers={"Range": "bytes=-100"})
    assert part.status == 206 and await part.read() == api.wav[-100:]
    # Tampered: another call id, a later expiry, a changed signature.
    call, expires, sig = url.path.rsplit("/", 1)[1].split(".")
    for token in (f"{int(call) + 1}.{expires}.{sig}", f"{call}.{int(expires) + 999}.{sig}",
                  f"{call}.{expires}.{'A' * 43}"):
        resp = await api.client.get(f"/api/v1/recordings/signed/{token}")
        assert resp.status == 403 and (await resp.json())["error"]["code"] == "link_bad_signature"
    expired = signing.sign(api.service.signing_key, api.call_id, now=time.time() - 7200, ttl_seconds=60)
    resp = await api.client.get(f"/api/v1/recordings/signed/{expired.token}")
    assert resp.status == 410 and (await resp.json())["error"]["code"] == "link_expired"
    resp = await api.client.get("/api/v1/recordings/signed/garbage")
    assert resp.status == 403 and (await resp.json())["error"]["code"] == "link_malformed"
    # Only those who may listen may create links.
    assert (await api.client.post(f"/api/v1/calls/{api.call_id}/recording/link",
                                  headers=auth("op102"))).status == 404
    assert (await api.client.post(f"/api/v1/calls/{api.call_id}/recording/link")).status == 401


async def test_legal_hold(api: Api) -> None:
    path = f"/api/v1/calls/{api.call_id}/legal-hold"
    resp = await api.client.post(path, json={"hold": True}, headers=auth("manager"))
    assert resp.status == 200 and await resp.json() == {"call_id": api.call_id, "legal_hold": True}
    async with api.engine.connect() as conn:
        held = (await conn.execute(sa.select(calls.c.legal_hold).where(calls.c.id == api.call_id))).scalar()
    assert held is True
    assert (await api.client.post(path, json={"hold": False}, headers=auth("op101"))).status == 403
    for bad in ({"hold": "yes"}, {}, {"hold": True, "x": 1}, [True]):
        resp = await api.client.post(path, json=bad, headers=auth("manager"))
        assert resp.status == 400, bad
    resp = await api.client.post(path, data=b"not json{", headers=auth("manager"))
    assert resp.status == 400
    assert (await api.client.post("/api/v1/calls/424242/legal-hold", json={"hold": True},
                                  headers=auth("manager"))).status == 404
    async with api.engine.connect() as conn:  # the bad requests changed nothing
        held = (await conn.execute(sa.select(calls.c.legal_hold).where(calls.c.id == api.call_id))).scalar()
    assert held is True


async def test_call_detail_enricher(api: Api) -> None:
    from pbx_bridge.calls.record import CallRecord
    from pbx_bridge.recording.http import recording_enricher

    async with api.engine.connect() as conn:
        found = await recording_enricher(conn, CallRecord("main", "x", 0.0, id=api.call_id), {})
        none = await recording_enricher(conn, CallRecord("main", "y", 0.0, id=424242), {})
    assert none == {"recording": None}
    rec = found["recording"]
    assert rec["call_id"] == api.call_id and rec["state"] == "ready"
    assert rec["url"] == f"/api/v1/calls/{api.call_id}/recording"
    assert "stored_path" not in rec and not any("/" in str(v) and "api" not in str(v) for v in rec.values())


def _schema(name: str) -> dict[str, Any]:
    from pbx_bridge.recording.schemas import OPENAPI_SCHEMAS

    return {**OPENAPI_SCHEMAS[name], "components": {"schemas": OPENAPI_SCHEMAS}}


async def test_responses_match_the_openapi_description(api: Api) -> None:
    import jsonschema_rs  # what schemathesis validates with

    from pbx_bridge.calls.record import CallRecord
    from pbx_bridge.recording.http import recording_enricher
    from pbx_bridge.recording.schemas import OPENAPI_PATHS

    canonical = {r.resource.canonical for r in api.client.app.router.routes() if r.resource is not None}
    routes = {path for path in canonical if "recording" in path or "legal-hold" in path}
    assert routes == set(OPENAPI_PATHS)
    link = await api.client.post(f"/api/v1/calls/{api.call_id}/recording/link", headers=auth("crm"))
    jsonschema_rs.validate(_schema("RecordingLink"), await link.json())
    hold = await api.client.post(f"/api/v1/calls/{api.call_id}/legal-hold", json={"hold": False},
                                 headers=auth("admin"))
    jsonschema_rs.validate(_schema("LegalHold"), await hold.json())
    async with api.engine.connect() as conn:
        found = await recording_enricher(conn, CallRecord("main", "x", 0.0, id=api.call_id), {})
    jsonschema_rs.validate(_schema("Recording"), found["recording"])


async def test_playable_file_for_other_readers(api: Api) -> None:
    from recordings.catalog import playable_file

    root = api.service.locations.recordings_dir
    async with api.engine.connect() as conn:
        found = await playable_file(conn, api.call_id, root)
        assert found is not None and found.read_bytes() == api.wav
        assert await playable_file(conn, 424242, root) is None
    processing = await add_call(api.engine, "x-proc", "101", ["101"], state="processing")
    evil = await add_call(api.engine, "x-evil", "101", ["101"], state="ready", stored="../../etc/passwd")
    async with api.engine.connect() as conn:
        assert await playable_file(conn, processing, root) is None
        assert await playable_file(conn, evil, root) is None
