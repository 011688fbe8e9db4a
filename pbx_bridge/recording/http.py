"""HTTP routes for recordings: playback with Range, signed links, legal hold.

Only integers from the URL are used (route patterns admit digits only); the file path always comes
from the database row, and is checked to stay inside the recordings dir.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, BinaryIO

import sqlalchemy as sa
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncConnection

from pbx_bridge.calls.record import CallRecord
from pbx_bridge.db.schema import calls
from pbx_bridge.http.app_keys import RUNTIME
from pbx_bridge.http.auth import Principal, require
from pbx_bridge.http.errors import ApiError
from pbx_bridge.http.params import path_id
from pbx_bridge.log import event
from pbx_bridge.recording.service import SERVICE_NAME, RecordingService
from pbx_bridge.runtime import Runtime
from recordings import catalog, signing
from recordings.catalog import RecordingRow
from recordings.playback import RangeNotSatisfiable, parse_range
from recordings.storage import UnsafePath, resolve_stored

log = logging.getLogger("pbx_bridge.recording.http")

CHUNK = 64 * 1024
SIGNED_PREFIX = "/api/v1/recordings/signed/"


def _runtime(request: web.Request) -> Runtime:
    return request.app[RUNTIME]


def _service(request: web.Request) -> RecordingService:
    service = _runtime(request).services.get(SERVICE_NAME)
    if not isinstance(service, RecordingService):
        raise ApiError(503, "recordings_unavailable", "recordings are not enabled")
    return service


def _call_id(request: web.Request) -> int:
    return path_id(request, "call")


async def _visible_call(request: web.Request, call_id: int, who: Principal) -> Any:
    """The call, if this principal may see it: operators only their own (answered or rung)."""
    async with _runtime(request).engine.connect() as conn:
        row = (await conn.execute(
            sa.select(calls.c.id, calls.c.operator, calls.c.operators_rung, calls.c.legal_hold)
            .where(calls.c.id == call_id))).first()
    if row is None:
        raise ApiError(404, "not_found", "no such call")
    if who.role == "operator":
        mine = who.extension is not None and (
            row.operator == who.extension or who.extension in (row.operators_rung or []))
        if not mine:
            raise ApiError(404, "not_found", "no such call")  # not theirs: as if it did not exist
    return row


async def _recording(request: web.Request, call_id: int) -> RecordingRow:
    async with _runtime(request).engine.connect() as conn:
        row = await catalog.get_by_call(conn, call_id)
    if row is None:
        raise ApiError(404, "recording_not_found", "this call has no recording")
    if row.state == "deleted":
        raise ApiError(410, "recording_deleted", "the recording was deleted by the retention policy")
    if row.state in ("recording", "processing"):
        raise ApiError(409, "recording_not_ready", f"the recording is still {row.state}",
                       headers={"Retry-After": "5"})
    if not row.playable:
        raise ApiError(404, "recording_not_found", f"the recording is {row.state}: {row.last_error}")
    return row


def _open_sized(path: Path) -> tuple[BinaryIO, int]:
    fh = open(path, "rb")  # closed by the caller
    return fh, os.fstat(fh.fileno()).st_size


def _read_at(fh: BinaryIO, offset: int, size: int) -> bytes:
    return os.pread(fh.fileno(), size, offset)


async def _stream(request: web.Request, row: RecordingRow) -> web.StreamResponse:
    service = _service(request)
    assert row.stored_path is not None
    try:
        path = resolve_stored(service.locations.recordings_dir, row.stored_path)
        # Opened before anything is sent: a vanished file is a clean 404, and the size is the
        # size of the file actually streamed.
        fh, size = await asyncio.to_thread(_open_sized, path)
    except (UnsafePath, OSError) as exc:
        event(log, logging.ERROR, "recording.file_unavailable", call_id=row.call_id, error=str(exc))
        raise ApiError(404, "recording_file_missing", "the recording's file is missing") from None
    try:
        headers = {"Accept-Ranges": "bytes", "Content-Type": "audio/wav",
                   "Cache-Control": "private, max-age=0",
                   "Content-Disposition": f'inline; filename="call-{row.call_id}.wav"'}
        if row.sha256:
            headers["ETag"] = f'"{row.sha256}"'
        try:
            wanted = parse_range(request.headers.get("Range"), size)
        except RangeNotSatisfiable as exc:
            raise ApiError(416, "range_not_satisfiable", str(exc),
                           headers={"Content-Range": exc.content_range}) from None
        if_range = request.headers.get("If-Range")
        if wanted is not None and if_range is not None and if_range != headers.get("ETag"):
            wanted = None  # the client's copy is stale: send the whole file
        start, length = (0, size) if wanted is None else (wanted.start, wanted.length)
        response = web.StreamResponse(status=200 if wanted is None else 206, headers=headers)
        if wanted is not None:
            response.headers["Content-Range"] = wanted.content_range
        response.content_length = length
        await response.prepare(request)
        if request.method == "HEAD":
            return response
        left = length
        while left > 0:
            data = await asyncio.to_thread(_read_at, fh, start + length - left, min(CHUNK, left))
            if not data:
                break  # the file shrank under us; the client sees a short body
            await response.write(data)
            left -= len(data)
    finally:
        fh.close()  # a read-only file: closing does not wait on the disk
    await response.write_eof()
    return response


async def get_recording(request: web.Request) -> web.StreamResponse:
    who = require(request, "manager", "operator", "crm")
    call_id = _call_id(request)
    await _visible_call(request, call_id, who)
    return await _stream(request, await _recording(request, call_id))


async def create_link(request: web.Request) -> web.Response:
    who = require(request, "manager", "operator", "crm")
    call_id = _call_id(request)
    await _visible_call(request, call_id, who)
    row = await _recording(request, call_id)
    service = _service(request)
    link = signing.sign(service.signing_key, row.call_id, now=time.time(),
                        ttl_seconds=service.config.link_ttl_seconds)
    base = _runtime(request).settings.server.public_url.rstrip("/") or (
        f"{request.scheme}://{request.host}")
    event(log, logging.INFO, "recording.link_issued", call_id=call_id, by=who.name,
          expires_at=link.expires_at)
    return web.json_response({
        "url": f"{base}{SIGNED_PREFIX}{link.token}",
        "expires_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(link.expires_at)),
    }, status=201)


async def get_signed(request: web.Request) -> web.StreamResponse:
    service = _service(request)
    try:
        call_id = signing.verify(service.signing_key, request.match_info["token"], now=time.time())
    except signing.TokenError as exc:
        status = 410 if exc.reason == "expired" else 403
        raise ApiError(status, f"link_{exc.reason}", str(exc)) from None
    return await _stream(request, await _recording(request, call_id))


async def set_legal_hold(request: web.Request) -> web.Response:
    who = require(request, "manager")
    call_id = _call_id(request)
    try:
        body = await request.json()
    except RecursionError:
        raise ApiError(400, "bad_request", "the JSON body is nested too deeply") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError(400, "bad_request", 'body must be JSON: {"hold": true|false}') from None
    if not isinstance(body, dict) or set(body) != {"hold"} or not isinstance(body["hold"], bool):
        raise ApiError(400, "bad_request", 'body must be {"hold": true|false}')
    hold = body["hold"]
    async with _runtime(request).engine.begin() as conn:
        result = await conn.execute(calls.update().where(calls.c.id == call_id).values(legal_hold=hold))
    if not result.rowcount:
        raise ApiError(404, "not_found", "no such call")
    event(log, logging.INFO, "recording.legal_hold", call_id=call_id, hold=hold, by=who.name)
    return web.json_response({"call_id": call_id, "legal_hold": hold})


async def recording_enricher(conn: AsyncConnection, record: CallRecord,
                             _detail: dict[str, Any]) -> dict[str, Any]:
    """The call detail's `recording` (GET /api/v1/calls/{id}): the public shape, or None."""
    if record.id is None:
        return {"recording": None}
    row = await catalog.get_by_call(conn, record.id)
    return {"recording": None if row is None else RecordingService.describe(row)}


def setup(app: web.Application) -> None:
    """Register the routes. The signed route needs no bearer token: the auth middleware must let
    SIGNED_PREFIX through (the signature is the credential)."""
    app.router.add_get("/api/v1/calls/{id:[0-9]+}/recording", get_recording)
    app.router.add_post("/api/v1/calls/{id:[0-9]+}/recording/link", create_link)
    app.router.add_get(SIGNED_PREFIX + "{token:[0-9A-Za-z._-]+}", get_signed)
    app.router.add_post("/api/v1/calls/{id:[0-9]+}/legal-hold", set_legal_hold)
