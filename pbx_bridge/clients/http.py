"""Client cards over HTTP: thin handlers over crm_sync (issue 4).

GET /api/v1/clients?q= (phone in any format, or part of a name / company), POST /api/v1/clients,
GET/PATCH /api/v1/clients/{id}, GET /api/v1/clients/{id}/timeline, GET /api/v1/tasks,
POST /api/v1/tasks/{id}/close. Who may do what to which card: pbx_bridge.clients.access.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from aiohttp import web

from crm_sync.cards import (
    CardChanges,
    CardError,
    CardInput,
    CardNotFound,
    CardQuery,
    create_card,
    find_cards,
    get_card,
    iso,
    phone_conflicts,
    touch_activity,
    update_card,
)
from crm_sync.merge import merge_cards
from crm_sync.phones import ascii_digits
from crm_sync.tasks import (
    TaskError,
    TaskNotFound,
    close_task,
    create_task,
    get_task,
    list_tasks,
    visible_to,
)
from crm_sync.timeline import TimelineError, add_note, list_timeline
from pbx_bridge.clients.access import (
    check_card,
    check_responsible,
    operator_extension,
    visible_cards,
    visible_entries,
)
from pbx_bridge.crm_connectors.options import match_settings
from pbx_bridge.db.schema import calls
from pbx_bridge.events.messages import make_message, task_message
from pbx_bridge.http.app_keys import RUNTIME
from pbx_bridge.http.auth import require
from pbx_bridge.http.errors import ApiError
from pbx_bridge.http.params import (
    check_text,
    field_int,
    json_object,
    path_id,
    query_bool,
    query_choice,
    query_int,
)

MAX_NOTE = 10_000

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


def _filter_text(request: web.Request, key: str, limit: int) -> str | None:
    """A filter's value; "" (given empty) means "none set" (cards without a responsible...)."""
    if key not in request.query:
        return None
    value = check_text(request.query[key].strip(), key)
    if len(value) > limit:
        raise ApiError(422, "invalid_parameter", f"'{key}' is longer than {limit} characters")
    return value


async def search(request: web.Request) -> web.Response:
    """The card list: most recently active first; `q` a name, a company, a number in any format
    or any 4+ consecutive digits of one; filters `responsible`, `source`; cursor pages."""
    who = require(request, "crm", "manager", "operator")
    query = check_text(request.query.get("q", "").strip(), "q")
    if len(query) > 255:
        raise ApiError(422, "invalid_parameter", "'q' is longer than 255 characters")
    responsible = _filter_text(request, "responsible", 16)
    if responsible and not ascii_digits(responsible):
        raise ApiError(422, "invalid_parameter", "'responsible' must be an extension (digits)")
    card_query = CardQuery(text=query or None, responsible=responsible,
                           source=_filter_text(request, "source", 128),
                           limit=query_int(request, "limit", 50, 1, 200),
                           cursor=request.query.get("cursor") or None)
    ext = operator_extension(who)
    if ext is not None:
        card_query = dataclasses.replace(card_query, visible=visible_cards(ext))
    runtime = request.app[RUNTIME]
    async with runtime.engine.connect() as conn:
        try:
            cards, next_cursor = await find_cards(conn, card_query, match_settings(runtime.settings))
        except CardError as exc:
            raise _card_error(exc) from None
    return web.json_response({"items": cards, "next_cursor": next_cursor})


async def create(request: web.Request) -> web.Response:
    who = require(request, "crm", "manager", "operator")
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
            await check_responsible(conn, who, None, card_input.responsible)
            client_id = await create_card(conn, card_input, match_settings(runtime.settings),
                                          datetime.now(UTC))
            card = await get_card(conn, client_id)
            conflicts = await phone_conflicts(conn, client_id)
    except CardError as exc:
        raise _card_error(exc) from None
    runtime.bus.publish(make_message("client.created", [card["responsible"] if card else None],
                                     client=card, call_id=None))
    # Other cards holding one of its numbers: the UI warns and offers to merge.
    return web.json_response({**(card or {}), "conflicts": conflicts}, status=201)


async def show(request: web.Request) -> web.Response:
    who = require(request, "crm", "manager", "operator")
    client_id = _id(request)
    runtime = request.app[RUNTIME]
    async with runtime.engine.connect() as conn:
        await check_card(conn, who, client_id)
        card = await get_card(conn, client_id, phones_limit=1000)
    if card is None:
        raise ApiError(404, "not_found", "no such client")
    return web.json_response(card)


async def update(request: web.Request) -> web.Response:
    who = require(request, "crm", "manager", "operator")
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
            await check_card(conn, who, client_id)
            await check_responsible(conn, who, client_id, changes.responsible)
            await update_card(conn, client_id, changes, match_settings(runtime.settings), datetime.now(UTC))
            card = await get_card(conn, client_id, phones_limit=1000)
            conflicts = await phone_conflicts(conn, client_id)
    except CardNotFound:
        raise ApiError(404, "not_found", "no such client") from None
    except CardError as exc:
        raise _card_error(exc) from None
    return web.json_response({**(card or {}), "conflicts": conflicts})


async def add_note_handler(request: web.Request) -> web.Response:
    """POST /api/v1/clients/{id}/notes {"text"}: a note on the card's timeline."""
    who = require(request, "crm", "manager", "operator")
    client_id = _id(request)
    data = await json_object(request)
    _unknown(data, {"text"})
    text = _text(data, "text") or ""
    if len(text) > MAX_NOTE:
        raise ApiError(422, "invalid_field", f"text: longer than {MAX_NOTE} characters")
    runtime = request.app[RUNTIME]
    now = datetime.now(UTC)
    try:
        async with runtime.engine.begin() as conn:
            await check_card(conn, who, client_id)
            entry_id = await add_note(conn, client_id, text, now, author=who.name)
            await touch_activity(conn, client_id, now)
    except TimelineError as exc:
        raise ApiError(422, "invalid_field", f"text: {exc}") from None
    return web.json_response({"id": entry_id, "kind": "note", "call_id": None, "at": iso(now),
                              "payload": {"text": text.strip(), "author": who.name}}, status=201)


async def merge_handler(request: web.Request) -> web.Response:
    """POST /api/v1/clients/{id}/merge {"from_id"}: card from_id merged into this one (both
    timelines kept here); its calls now belong to this card."""
    who = require(request, "crm", "manager", "operator")
    keep_id = _id(request)
    data = await json_object(request)
    _unknown(data, {"from_id"})
    drop_id = field_int(data, "from_id")
    if drop_id is None:
        raise ApiError(422, "invalid_field", "'from_id' is required")
    runtime = request.app[RUNTIME]
    try:
        async with runtime.engine.begin() as conn:
            await check_card(conn, who, keep_id)
            await check_card(conn, who, drop_id)
            # Merging moves the card's numbers, so the routing of its calls: an operator may not
            # take another's customer this way either.
            dropped = await get_card(conn, drop_id, phones_limit=0)
            if dropped is not None and dropped["responsible"] is not None:
                await check_responsible(conn, who, keep_id, dropped["responsible"])
            await merge_cards(conn, keep_id, drop_id, datetime.now(UTC))
            await conn.execute(sa.update(calls).where(calls.c.client_id == drop_id)
                               .values(client_id=keep_id))
            card = await get_card(conn, keep_id, phones_limit=1000)
    except CardNotFound:
        raise ApiError(404, "not_found", "no such client") from None
    except CardError as exc:
        raise _card_error(exc) from None
    return web.json_response(card)


async def timeline(request: web.Request) -> web.Response:
    who = require(request, "crm", "manager", "operator")
    client_id = _id(request)
    limit = query_int(request, "limit", 100, 1, 500)
    before = request.query.get("before_id")
    before_id = query_int(request, "before_id", 0, 1, 2**31 - 1) if before else None
    runtime = request.app[RUNTIME]
    async with runtime.engine.connect() as conn:
        await check_card(conn, who, client_id)
        ext = operator_extension(who)
        # An operator sees their own calls only: not another's numbers, times, recordings.
        entries = await list_timeline(conn, client_id, limit=limit, before_id=before_id,
                                      visible=visible_entries(ext) if ext is not None else None)
    next_before = entries[-1]["id"] if len(entries) == limit else None
    return web.json_response({"items": entries, "next_before_id": next_before})


async def tasks(request: web.Request) -> web.Response:
    """Tasks: `assignee` (an extension: theirs, and the missed calls that rang them), `mine`
    (the caller's own extension, with the shared call-back group's), `status`, `client_id`,
    `order` = due (most urgent first) or new (newest first)."""
    who = require(request, "crm", "manager", "operator")
    client_raw = request.query.get("client_id")
    client_id = query_int(request, "client_id", 0, 1, 2**31 - 1) if client_raw else None
    assignee = request.query.get("assignee") or None
    if assignee is not None and (not ascii_digits(assignee) or len(assignee) > 16):
        raise ApiError(422, "invalid_parameter", "'assignee' must be an extension (digits)")
    mine = query_bool(request, "mine") or who.role == "operator"
    group = request.app[RUNTIME].settings.crm.callback_group or None
    seen: str | None = None
    if mine:
        # An operator sees their own tasks and the shared call-back group's only.
        seen, assignee = who.extension or "-", None
    status: Any = query_choice(request, "status", ("open", "closed"))
    by_due = query_choice(request, "order", ("due", "new")) == "due"
    limit = query_int(request, "limit", 100, 1, 500)
    runtime = request.app[RUNTIME]
    async with runtime.engine.connect() as conn:
        found = await list_tasks(conn, client_id=client_id, assignee=assignee, status=status, limit=limit,
                                 seen_by_extension=seen, group=group, by_due=by_due)
    return web.json_response({"items": found})


async def create_task_handler(request: web.Request) -> web.Response:
    """POST /api/v1/tasks {"client_id", "title", "due_at"?, "assignee"?}: a task made by hand."""
    who = require(request, "crm", "manager", "operator")
    data = await json_object(request)
    _unknown(data, {"client_id", "title", "due_at", "assignee"})
    client_id = field_int(data, "client_id")
    if client_id is None:
        raise ApiError(422, "invalid_field", "'client_id' is required")
    due_raw = _text(data, "due_at")
    due_at = None
    if due_raw:
        try:
            due_at = datetime.fromisoformat(due_raw.replace("Z", "+00:00"))
        except ValueError:
            raise ApiError(422, "invalid_field", "'due_at' must be an ISO 8601 time") from None
        if due_at.tzinfo is None:
            due_at = due_at.replace(tzinfo=UTC)
    assignee = _text(data, "assignee") or (who.extension if who.role == "operator" else None)
    runtime = request.app[RUNTIME]
    try:
        async with runtime.engine.begin() as conn:
            if operator_extension(who) is not None:
                await check_card(conn, who, client_id)
            task_id = await create_task(conn, client_id=client_id, title=_text(data, "title") or "",
                                        assignee=assignee, due_at=due_at, now=datetime.now(UTC),
                                        created_by=who.name)
            task = await get_task(conn, task_id)
    except TaskNotFound:
        raise ApiError(404, "not_found", "no such client") from None
    except TaskError as exc:
        raise ApiError(422, "invalid_field", f"{exc.field}: {exc.reason}") from None
    assert task is not None
    runtime.bus.publish(task_message(task, runtime.settings.crm.callback_group))
    return web.json_response(task, status=201)


async def close(request: web.Request) -> web.Response:
    # Not the manager: a manager oversees tasks, the person who did the work closes them.
    who = require(request, "crm", "operator")
    task_id = _id(request)
    runtime = request.app[RUNTIME]
    group = runtime.settings.crm.callback_group or None
    try:
        async with runtime.engine.begin() as conn:
            if who.role == "operator":
                found = await get_task(conn, task_id)
                if found is None or not visible_to(found, who.extension or "-", group):
                    raise TaskNotFound(task_id)
            task = await close_task(conn, task_id, datetime.now(UTC))
    except TaskNotFound:
        raise ApiError(404, "not_found", "no such task") from None
    runtime.bus.publish(task_message(task, group))
    return web.json_response(task)


def setup(app: web.Application) -> None:
    app.router.add_get("/api/v1/clients", search)
    app.router.add_post("/api/v1/clients", create)
    app.router.add_get("/api/v1/clients/{id}", show)
    app.router.add_patch("/api/v1/clients/{id}", update)
    app.router.add_get("/api/v1/clients/{id}/timeline", timeline)
    app.router.add_post("/api/v1/clients/{id}/notes", add_note_handler)
    app.router.add_post("/api/v1/clients/{id}/merge", merge_handler)
    app.router.add_get("/api/v1/tasks", tasks)
    app.router.add_post("/api/v1/tasks", create_task_handler)
    app.router.add_post("/api/v1/tasks/{id}/close", close)
