"""GET /api/v1/calls (filters, cursor pages) and GET /api/v1/calls/{id} (legs, transfers, extras)."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncConnection

from crm_sync.phone_search import MIN_DIGITS, PartialNumberError, digit_patterns
from crm_sync.phones import ascii_digits, normalize
from pbx_bridge.calls.enrich import PLACEHOLDERS, enrichers
from pbx_bridge.calls.export import cells, csv_chunk, file_name, headers, label_for, pages, write_xlsx
from pbx_bridge.calls.query import (
    DEFAULT_SORT,
    BadCursor,
    CallFilter,
    Sort,
    called_back,
    count_calls,
    get_call,
    leg_dict,
    list_calls,
    took_part,
)
from pbx_bridge.calls.record import SOURCES
from pbx_bridge.db.schema import calls
from pbx_bridge.http.app_keys import RUNTIME
from pbx_bridge.http.auth import Principal, require
from pbx_bridge.http.errors import ApiError
from pbx_bridge.http.params import check_text, path_id, query_bool, query_choice, query_int, query_time
from pbx_bridge.i18n import LANGUAGES, Catalog, choose_language, load_catalogs
from recordings.transcription.search import SearchHit, SearchQueryError, search_call_ids

log = logging.getLogger("pbx_bridge.calls.http")

SEARCH_LIMIT = 1000
DIRECTIONS = ("inbound", "outbound", "internal", "unknown")
STATUSES = ("answered", "no_answer", "busy", "abandoned", "failed", "live")
OPERATOR_ROLES = ("answered", "rang")
XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
# The UI's catalogs: export headers and values in the reader's language.
EXPORT_CATALOGS: web.AppKey[dict[str, Catalog]] = web.AppKey("calls_export_catalogs", dict)
# XLSX exports being written (api.export_xlsx_writers at once): a burst of clicks must not start
# a process each.
XLSX_WRITERS: web.AppKey[asyncio.Semaphore] = web.AppKey("calls_xlsx_writers", asyncio.Semaphore)


def _phone(request: web.Request, key: str) -> str | None:
    raw = request.query.get(key)
    if not raw:
        return None
    phone = request.app[RUNTIME].settings.phone
    e164 = normalize(raw, phone.default_region, phone.max_extension_length)
    if e164 is None:
        raise ApiError(422, "invalid_parameter", f"'{key}' is not a valid phone number: {raw[:40]!r}")
    return e164


def _number(request: web.Request) -> tuple[str | None, list[str] | None]:
    """`number`: a whole number in any format (exact E.164), or any 4+ consecutive digits of one."""
    raw = request.query.get("number", "").strip()
    if not raw:
        return None, None
    phone = request.app[RUNTIME].settings.phone
    e164 = normalize(raw, phone.default_region, phone.max_extension_length)
    if e164 is not None:
        return e164, None
    try:
        return None, digit_patterns(raw, phone.default_region)
    except PartialNumberError:
        raise ApiError(422, "number_too_short",
                       f"'number' needs a whole phone number or at least {MIN_DIGITS} of its digits, "
                       f"got {raw[:40]!r}") from None


def _extension(request: web.Request, key: str) -> str | None:
    raw = request.query.get(key)
    if not raw:
        return None
    if not ascii_digits(raw) or len(raw) > 16:
        raise ApiError(422, "invalid_parameter", f"'{key}' must be an extension (digits)")
    return raw


def call_filter(request: web.Request, who: Principal) -> CallFilter:
    """The journal's filters from the query string (the list and the export share them)."""
    client_raw = request.query.get("client_id")
    client_id = query_int(request, "client_id", 0, 1, 2**31 - 1) if client_raw else None
    start, end = query_time(request, "from"), query_time(request, "to")
    if start is not None and end is not None and end < start:
        raise ApiError(422, "invalid_range", "'to' is before 'from'")
    number, digits = _number(request)
    return CallFilter(
        start=start, end=end,
        direction=query_choice(request, "direction", DIRECTIONS),
        status=query_choice(request, "status", STATUSES), missed=query_bool(request, "missed"),
        operator=_extension(request, "operator"),
        operator_role=query_choice(request, "operator_role", OPERATOR_ROLES),
        number=number, number_digits=digits,
        client_id=client_id, did=_phone(request, "did"),
        source=query_choice(request, "source", SOURCES),
        visible_to=who.extension if who.role == "operator" else None,
    )


async def _narrow_to_transcripts(request: web.Request, conn: AsyncConnection,
                                 f: CallFilter) -> dict[int, SearchHit]:
    """`q`: transcript search narrows the journal to the calls that match (the best SEARCH_LIMIT
    of them), still in the journal's own order and pages."""
    q = check_text(request.query.get("q", "").strip(), "q")  # PostgreSQL refuses a NUL: 422, not 500
    if len(q) > 500:
        raise ApiError(422, "invalid_parameter", "'q' is longer than 500 characters")
    if not q:
        return {}
    try:
        hits = await search_call_ids(conn, q, limit=SEARCH_LIMIT)
    except SearchQueryError as exc:
        raise ApiError(400, "invalid_search", str(exc)) from None
    matches = {hit.call_id: hit for hit in hits}
    f.extra.append(calls.c.id.in_(list(matches)))
    return matches


async def list_handler(request: web.Request) -> web.Response:
    who = require(request, "crm", "manager", "operator")
    runtime = request.app[RUNTIME]
    api = runtime.settings.api
    f = call_filter(request, who)
    limit = query_int(request, "limit", api.default_page_size, 1, api.max_page_size)
    try:
        sort = Sort.parse(request.query.get("sort") or DEFAULT_SORT)
    except ValueError as exc:
        raise ApiError(422, "invalid_parameter", str(exc)) from None
    try:
        async with runtime.engine.connect() as conn:
            matches = await _narrow_to_transcripts(request, conn, f)
            records, next_cursor = await list_calls(conn, f, limit, request.query.get("cursor") or None,
                                                    sort)
            returned = await called_back(conn, records)
    except BadCursor as exc:
        raise ApiError(422, "invalid_parameter", str(exc)) from None
    items = []
    for record in records:
        item = record.to_dict()
        hit = matches.get(record.id or 0)
        if hit is not None:
            item["match"] = {"snippet": hit.snippet, "speaker": hit.speaker, "offset": hit.offset}
        if record.missed:
            item["called_back_at"] = returned.get(record.id or 0)
        items.append(item)
    return web.json_response({"items": items, "next_cursor": next_cursor})


async def export_handler(request: web.Request) -> web.StreamResponse:
    """GET /api/v1/calls/export?format=csv|xlsx&lang=ru|en + the list's filters: every matching
    call, newest first, streamed."""
    who = require(request, "crm", "manager", "operator")
    runtime = request.app[RUNTIME]
    fmt = query_choice(request, "format", ("csv", "xlsx")) or "csv"
    lang = query_choice(request, "lang", LANGUAGES) or choose_language(
        None, request.headers.get("Accept-Language"), runtime.settings.web.default_language)
    f = call_filter(request, who)
    async with runtime.engine.connect() as conn:
        await _narrow_to_transcripts(request, conn, f)
        total = await count_calls(conn, f)
    limit = runtime.settings.api.export_max_rows
    if total > limit:
        raise ApiError(422, "export_too_large",
                       f"{total} calls match; an export holds at most {limit}: narrow the dates")
    label = label_for(request.app[EXPORT_CATALOGS][lang])
    tz = ZoneInfo(runtime.settings.web.report_timezone)
    notifier = runtime.services.get("notifier")
    channel = notifier.ad_channel if notifier is not None else (lambda _did: None)

    def row(call: Any) -> list[Any]:
        return cells(call, tz, label, channel)

    now = datetime.now(tz)
    if fmt == "xlsx":
        async with request.app[XLSX_WRITERS]:
            path = await write_xlsx(runtime.engine, f, headers(label), label("export.sheet"), row)
        try:
            return await _send_file(request, path, file_name("calls", now, "xlsx"), XLSX_TYPE)
        finally:
            await asyncio.to_thread(path.unlink, True)
    response = web.StreamResponse(headers={
        "Content-Type": "text/csv; charset=utf-8",
        "Content-Disposition": f'attachment; filename="{file_name("calls", now, "csv")}"'})
    await response.prepare(request)
    await response.write(b"\xef\xbb\xbf" + csv_chunk([headers(label)]))  # the BOM: Excel reads UTF-8
    async for records in pages(runtime.engine, f):
        await response.write(csv_chunk([row(r) for r in records]))
    await response.write_eof()
    return response


async def _send_file(request: web.Request, path: Path, name: str, content_type: str) -> web.StreamResponse:
    size = (await asyncio.to_thread(path.stat)).st_size
    response = web.StreamResponse(headers={
        "Content-Type": content_type, "Content-Length": str(size),
        "Content-Disposition": f'attachment; filename="{name}"'})
    await response.prepare(request)
    with path.open("rb") as fh:
        while chunk := await asyncio.to_thread(fh.read, 256 * 1024):
            await response.write(chunk)
    await response.write_eof()
    return response


async def detail_handler(request: web.Request) -> web.Response:
    who = require(request, "crm", "manager", "operator")
    call_id = path_id(request, "call")
    runtime = request.app[RUNTIME]
    async with runtime.engine.connect() as conn:
        record = await get_call(conn, call_id)
        if record is None or (who.role == "operator" and not took_part(record, who.extension or "")):
            raise ApiError(404, "not_found", "no such call")
        detail: dict[str, Any] = record.to_dict()
        detail["legs"] = [leg_dict(leg) for leg in record.legs]
        detail["ended_during_outage"] = record.ended_during_outage
        for key in PLACEHOLDERS:
            detail[key] = None
        for enricher in enrichers(runtime.services):
            try:
                detail.update(await enricher(conn, record, detail))
            except Exception:
                # One feature's failure must not hide the call.
                log.exception("calls.enricher_failed", extra={"kv": {"call": call_id}})
    return web.json_response(detail)


def setup(app: web.Application) -> None:
    app[EXPORT_CATALOGS] = load_catalogs()
    app[XLSX_WRITERS] = asyncio.Semaphore(app[RUNTIME].settings.api.export_xlsx_writers)
    app.router.add_get("/api/v1/calls", list_handler)
    app.router.add_get("/api/v1/calls/export", export_handler)
    app.router.add_get("/api/v1/calls/{id}", detail_handler)
