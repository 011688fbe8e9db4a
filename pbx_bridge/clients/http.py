"""Client cards over HTTP: thin handlers over crm_sync (issue 4).

GET /api/v1/clients?q= (phone in any format, or part of a name / company), POST /api/v1/clients,
GET/PATCH /api/v1/clients/{id}, GET /api/v1/clients/{id}/timeline, GET /api/v1/tasks,
POST /api/v1/tasks/{id}/close. Roles: crm and admin write; manager reads.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from crm_sync.cards import (
    CardChanges,
    CardError,
    CardInput,
    CardNotFound,
    create_card,
    get_card,
    search_cards,
    update_card,
)
from crm_sync.tasks import TaskNotFound, close_task, get_task, list_tasks
from crm_sync.timeline import list_timeline
from pbx_bridge.clients.options import match_settings
from pbx_bridge.events.messages import make_message
from pbx_bridge.http.app_keys import RUNTIME
from pbx_bridge.http.auth import require
from pbx_bridge.http.errors import ApiError
from pbx_bridge.http.params import check_text, json_object, path_id, query_choice, query_int

_CARD_FIELDS = {"name", "company", "responsible", "source", "tags", "notes", "phones", "emails"}
_CHANGE_FIELDS = {"name", "company", "responsible", "source", "tags", "notes", "add_phones",
                  "remove_phones", "emails"}


def _card_error(exc: CardError) -> ApiError:
    return ApiError(422, "invalid_field", f"{exc.field}: {exc.reason}")


def _id(request: web.Request, key: str = "id") -> int:
    return path_id(request, "task" if "task" in request.path else "client", key)


def _text(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ApiError(422, "invalid_field", f"'{key}' must be a string")
    return check_text(value, key)


def _texts(data: dict[str, Any], key: str) -> list[str] | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ApiError(422, "invalid_field", f"'{key}' must be a list of strings")
    return [check_text(v, key) for v in value]


def _unknown(data: dict[str, Any], allowed: set[str]) -> None:
    extra = sorted(set(data) - allowed)
    if extra:
        raise ApiError(422, "invalid_field", f"unknown field(s): {', '.join(extra)}")


async def search(request: web.Request) -> web.Response:
    require(request, "crm", "manager", "operator")
    query = check_text(request.query.get("q", "").strip(), "q")
    if not query or len(query) > 255:
        raise ApiError(422, "invalid_parameter", "'q' (a phone number or part of a name) is required")
    limit = query_int(request, "limit", 50, 1, 200)
    runtime = request.app[RUNTIME]
    async with runtime.engine.connect() as conn:
        try:
            cards = await search_cards(conn, query, match_settings(runtime.settings), limit=limit)
        except CardError as exc:
            raise _card_error(exc) from None
    return web.json_response({"items": cards})


async def create(request: web.Request) -> web.Response:
    require(request, "crm", "manager", "operator")
    data = await json_object(request)
    _unknown(data, _CARD_FIELDS)
    card_input = CardInput(
        name=_text(data, "name") or "", phones=_texts(data, "phones") or [],
        emails=_texts(data, "emails") or [], company=_text(data, "company"),
        responsible=_text(data, "responsible"), source=_text(data, "source"),
        tags=_texts(data, "tags") or [], notes=_text(data, "notes"))
    runtime = request.app[RUNTIME]
    try:
        async with runtime.engine.begin() as conn:  # all or nothing
            client_id = await create_card(conn, card_input, match_settings(runtime.settings),
                                          datetime.now(UTC))
            card = await get_card(conn, client_id)
    except CardError as exc:
        raise _card_error(exc) from None
    runtime.bus.publish(make_message("client.created", [card["responsible"] if card else None],
                                     client=card, call_id=None))
    return web.json_response(card, status=201)


async def show(request: web.Request) -> web.Response:
    require(request, "crm", "manager", "operator")
    runtime = request.app[RUNTIME]
    async with runtime.engine.connect() as conn:
        card = await get_card(conn, _id(request), phones_limit=1000)
    if card is None:
        raise ApiError(404, "not_found", "no such client")
    return web.json_response(card)


async def update(request: web.Request) -> web.Response:
    require(request, "crm", "manager", "operator")
    client_id = _id(request)
    data = await json_object(request)
    _unknown(data, _CHANGE_FIELDS)
    changes = CardChanges(
        name=_text(data, "name"), company=_text(data, "company"), responsible=_text(data, "responsible"),
        source=_text(data, "source"), tags=_texts(data, "tags"), notes=_text(data, "notes"),
        add_phones=_texts(data, "add_phones") or [], remove_phones=_texts(data, "remove_phones") or [],
        emails=_texts(data, "emails"))
    runtime = request.app[RUNTIME]
    try:
        async with runtime.engine.begin() as conn:
            await update_card(conn, client_id, changes, match_settings(runtime.settings), datetime.now(UTC))
            card = await get_card(conn, client_id, phones_limit=1000)
    except CardNotFound:
        raise ApiError(404, "not_found", "no such client") from None
    except CardError as exc:
        raise _card_error(exc) from None
    return web.json_response(card)


async def timeline(request: web.Request) -> web.Response:
    require(request, "crm", "manager", "operator")
    client_id = _id(request)
    limit = query_int(request, "limit", 100, 1, 500)
    before = request.query.get("before_id")
    before_id = query_int(request, "before_id", 0, 1, 2**31 - 1) if before else None
    runtime = request.app[RUNTIME]
    async with runtime.engine.connect() as conn:
        if await get_card(conn, client_id, phones_limit=0) is None:
            raise ApiError(404, "not_found", "no such client")
        entries = await list_timeline(conn, client_id, limit=limit, before_id=before_id)
    next_before = entries[-1]["id"] if len(entries) == limit else None
    return web.json_response({"items": entries, "next_before_id": next_before})


async def tasks(request: web.Request) -> web.Response:
    who = require(request, "crm", "manager", "operator")
    client_raw = request.query.get("client_id")
    client_id = query_int(request, "client_id", 0, 1, 2**31 - 1) if client_raw else None
    assignee = request.query.get("assignee") or None
    if assignee is not None and (not assignee.isdigit() or len(assignee) > 16):
        raise ApiError(422, "invalid_parameter", "'assignee' must be an extension (digits)")
    if who.role == "operator":
        # An operator sees the call-back tasks assigned to their own extension only.
        assignee = who.extension or "-"
    status: Any = query_choice(request, "status", ("open", "closed"))
    limit = query_int(request, "limit", 100, 1, 500)
    runtime = request.app[RUNTIME]
    async with runtime.engine.connect() as conn:
        found = await list_tasks(conn, client_id=client_id, assignee=assignee, status=status, limit=limit)
    return web.json_response({"items": found})


async def close(request: web.Request) -> web.Response:
    who = require(request, "crm", "manager", "operator")
    task_id = _id(request)
    runtime = request.app[RUNTIME]
    try:
        async with runtime.engine.begin() as conn:
            if who.role == "operator":
                found = await get_task(conn, task_id)
                if found is None or found["assignee"] != who.extension:
                    raise TaskNotFound(task_id)
            task = await close_task(conn, task_id, datetime.now(UTC))
    except TaskNotFound:
        raise ApiError(404, "not_found", "no such task") from None
    return web.json_response(task)


def setup(app: web.Application) -> None:
    app.router.add_get("/api/v1/clients", search)
    app.router.add_post("/api/v1/clients", create)
    app.router.add_get("/api/v1/clients/{id}", show)
    app.router.add_patch("/api/v1/clients/{id}", update)
    app.router.add_get("/api/v1/clients/{id}/timeline", timeline)
    app.router.add_get("/api/v1/tasks", tasks)
    app.router.add_post("/api/v1/tasks/{id}/close", close)
