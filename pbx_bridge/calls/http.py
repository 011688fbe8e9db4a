"""GET /api/v1/calls (filters, cursor pages) and GET /api/v1/calls/{id} (legs, transfers, extras)."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from crm_sync.phones import normalize
from pbx_bridge.calls.enrich import PLACEHOLDERS, enrichers
from pbx_bridge.calls.query import BadCursor, CallFilter, get_call, leg_dict, list_calls, took_part
from pbx_bridge.calls.record import SOURCES
from pbx_bridge.db.schema import calls
from pbx_bridge.http.app_keys import RUNTIME
from pbx_bridge.http.auth import require
from pbx_bridge.http.errors import ApiError
from pbx_bridge.http.params import path_id, query_bool, query_choice, query_int, query_time
from recordings.transcription.search import SearchHit, SearchQueryError, search_call_ids

log = logging.getLogger("pbx_bridge.calls.http")

SEARCH_LIMIT = 1000
DIRECTIONS = ("inbound", "outbound", "internal", "unknown")
STATUSES = ("answered", "no_answer", "busy", "abandoned", "failed", "live")


def _phone(request: web.Request, key: str) -> str | None:
    raw = request.query.get(key)
    if not raw:
        return None
    phone = request.app[RUNTIME].settings.phone
    e164 = normalize(raw, phone.default_region, phone.max_extension_length)
    if e164 is None:
        raise ApiError(422, "invalid_parameter", f"'{key}' is not a valid phone number: {raw!r}")
    return e164


def _extension(request: web.Request, key: str) -> str | None:
    raw = request.query.get(key)
    if not raw:
        return None
    if not raw.isdigit() or len(raw) > 16:
        raise ApiError(422, "invalid_parameter", f"'{key}' must be an extension (digits)")
    return raw


async def list_handler(request: web.Request) -> web.Response:
    who = require(request, "crm", "manager", "operator")
    runtime = request.app[RUNTIME]
    api = runtime.settings.api
    client_raw = request.query.get("client_id")
    client_id = query_int(request, "client_id", 0, 1, 2**31 - 1) if client_raw else None
    f = CallFilter(
        start=query_time(request, "from"), end=query_time(request, "to"),
        direction=query_choice(request, "direction", DIRECTIONS),
        status=query_choice(request, "status", STATUSES), missed=query_bool(request, "missed"),
        operator=_extension(request, "operator"), number=_phone(request, "number"),
        client_id=client_id, did=_phone(request, "did"),
        source=query_choice(request, "source", SOURCES),
        visible_to=who.extension if who.role == "operator" else None,
    )
    limit = query_int(request, "limit", api.default_page_size, 1, api.max_page_size)
    q = request.query.get("q", "").strip()
    if len(q) > 500:
        raise ApiError(422, "invalid_parameter", "'q' is longer than 500 characters")
    matches: dict[int, SearchHit] = {}
    try:
        async with runtime.engine.connect() as conn:
            if q:
                # Transcript search narrows the journal to the calls that match (the best
                # SEARCH_LIMIT of them), still in the journal's own order and pages.
                hits = await search_call_ids(conn, q, limit=SEARCH_LIMIT)
                matches = {hit.call_id: hit for hit in hits}
                f.extra.append(calls.c.id.in_(list(matches)))
            records, next_cursor = await list_calls(conn, f, limit, request.query.get("cursor") or None)
    except BadCursor as exc:
        raise ApiError(422, "invalid_parameter", str(exc)) from None
    except SearchQueryError as exc:
        raise ApiError(400, "invalid_search", str(exc)) from None
    items = []
    for record in records:
        item = record.to_dict()
        hit = matches.get(record.id or 0)
        if hit is not None:
            item["match"] = {"snippet": hit.snippet, "speaker": hit.speaker, "offset": hit.offset}
        items.append(item)
    return web.json_response({"items": items, "next_cursor": next_cursor})


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
    app.router.add_get("/api/v1/calls", list_handler)
    app.router.add_get("/api/v1/calls/{id}", detail_handler)
