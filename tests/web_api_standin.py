"""A stand-in for the JSON API of issues 5, 6 and 7, for the browser tests of the web UI.

The UI depends only on the API's paths and JSON shapes; the real API, recordings and
transcripts were being built in parallel and were not merged when these tests were written.
The shapes below follow those branches as of 26 Nov 2026 (calls list/detail, crm_sync Card, Task
and timeline entries, the transcript endpoint's {job, transcript: {turns, analytics}}, recording
states, live events with "extensions"). Roles are the UI's needs (operators read cards and their
tasks, managers edit cards), which is wider than the API branch allows: see the UI's report.
`install(app, data)` adds ONLY the routes the application does not already have, so once the
real API is merged its routes are the ones the browser talks to. Calls come from the real calls
table; clients, tasks, recordings and transcripts from `StandinData` (their tables belong to other
features). Every route is authenticated through the UI's session middleware (request["principal"]).
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from aiohttp import WSMsgType, web

from pbx_bridge.calls.record import iso
from pbx_bridge.db.schema import calls
from pbx_bridge.http.app_keys import RUNTIME
from pbx_bridge.http.auth import require
from pbx_bridge.http.errors import ApiError


@dataclass
class StandinData:
    clients: dict[int, dict[str, Any]] = field(default_factory=dict)
    recordings: dict[int, Path] = field(default_factory=dict)
    transcripts: dict[int, dict[str, Any]] = field(default_factory=dict)
    tasks: list[dict[str, Any]] = field(default_factory=list)
    notes: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    click_to_call: list[dict[str, Any]] = field(default_factory=list)
    range_requests: list[tuple[str, int]] = field(default_factory=list)  # (Range header, status)
    calls_queries: list[dict[str, str]] = field(default_factory=list)
    ids: itertools.count = field(default_factory=lambda: itertools.count(1000))
    # True: clients and tasks refuse operators, as the API branch's roles do today.
    cards_for_managers_only: bool = False


STANDIN: web.AppKey[StandinData] = web.AppKey("standin", StandinData)


def record(row: Any, data: StandinData, detail: bool = True) -> dict[str, Any]:
    out = {
        "id": row.id, "pbx": row.pbx, "linkedid": row.linkedid, "direction": row.direction,
        "status": row.status, "missed": bool(row.missed), "customer_number": row.customer_number,
        "customer_name": row.customer_name, "did": row.did, "dialled": row.dialled,
        "operator": row.operator, "operators_rung": list(row.operators_rung or []),
        "queue": row.queue, "transfers": list(row.transfers or []),
        "started_at": iso(row.started_at), "answered_at": iso(row.answered_at),
        "ended_at": iso(row.ended_at), "wait_seconds": row.wait_seconds,
        "talk_seconds": row.talk_seconds, "click_to_call_id": row.click_to_call_id,
        "client_id": row.client_id,
    }
    if detail:  # GET /calls/{id}: legs and the features' parts (null = not filled in)
        out["legs"] = []
        out["client"] = data.clients.get(row.client_id) if row.client_id else None
        out["recording"] = ({"call_id": row.id, "state": "ready", "duration_seconds": 3.84}
                            if row.id in data.recordings else None)
        out["transcript"] = None
    return out


def _time(text: str, name: str) -> datetime:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(422, "invalid_parameter", f"{name} is not an ISO 8601 time") from None


async def list_calls(request: web.Request) -> web.Response:
    who = require(request, "manager", "operator", "crm")
    data = request.app[STANDIN]
    q = request.query
    data.calls_queries.append(dict(q))
    query = sa.select(calls).order_by(calls.c.started_at.desc(), calls.c.id.desc())
    if q.get("from"):
        query = query.where(calls.c.started_at >= _time(q["from"], "from"))
    if q.get("to"):
        query = query.where(calls.c.started_at < _time(q["to"], "to"))
    for name in ("direction", "did"):
        if q.get(name):
            query = query.where(getattr(calls.c, name) == q[name])
    if q.get("status") == "live":
        query = query.where(calls.c.status.is_(None))
    elif q.get("status"):
        query = query.where(calls.c.status == q["status"])
    if q.get("missed") in ("true", "1"):
        query = query.where(calls.c.missed.is_(True))
    if q.get("number"):
        query = query.where(calls.c.customer_number.contains(q["number"].replace(" ", "")))
    async with request.app[RUNTIME].engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    ext = who.extension if who.role == "operator" else q.get("operator")
    if ext:
        rows = [r for r in rows if r.operator == ext or ext in (r.operators_rung or [])]
    items = [record(r, data, detail=False) for r in rows]
    if q.get("q"):
        needle = q["q"].lower()
        found = []
        for item in items:
            turns = (data.transcripts.get(item["id"], {}).get("transcript") or {}).get("turns", [])
            for turn in turns:
                if needle in turn["text"].lower():
                    item["match"] = {"snippet": turn["text"], "speaker": turn["speaker"],
                                     "offset": turn["start"]}
                    found.append(item)
                    break
        items = found
    offset = int(q.get("cursor") or 0)
    limit = min(int(q.get("limit") or 50), 200)
    page = items[offset: offset + limit]
    more = offset + limit < len(items)
    return web.json_response({"items": page, "next_cursor": str(offset + limit) if more else None})


async def _call_row(request: web.Request) -> Any:
    async with request.app[RUNTIME].engine.connect() as conn:
        row = (await conn.execute(sa.select(calls).where(
            calls.c.id == int(request.match_info["id"])))).first()
    if row is None:
        raise ApiError(404, "not_found", "no such call")
    return row


async def get_call(request: web.Request) -> web.Response:
    require(request, "manager", "operator", "crm")
    return web.json_response(record(await _call_row(request), request.app[STANDIN]))


async def get_recording(request: web.Request) -> web.StreamResponse:
    require(request, "manager", "operator", "crm")
    data = request.app[STANDIN]
    path = data.recordings.get(int(request.match_info["id"]))
    if path is None:
        raise ApiError(404, "not_found", "no recording")
    response = web.FileResponse(path, headers={"Content-Type": "audio/wav"})
    await response.prepare(request)
    data.range_requests.append((request.headers.get("Range", ""), response.status))
    return response


async def get_transcript(request: web.Request) -> web.Response:
    require(request, "manager", "operator", "crm")
    found = request.app[STANDIN].transcripts.get(int(request.match_info["id"]))
    if found is None:
        raise ApiError(404, "not_found", "no transcript")
    return web.json_response(found)


async def list_clients(request: web.Request) -> web.Response:
    require(request, "manager", "operator", "crm")
    needle = request.query.get("q", "").strip().lower()
    if not needle:
        raise ApiError(422, "invalid_parameter", "'q' (a phone number or part of a name) is required")
    digits = "".join(ch for ch in needle if ch.isdigit())[-10:]
    items = [c for c in request.app[STANDIN].clients.values()
             if needle in c["name"].lower() or needle in (c["company"] or "").lower()
             or (digits and any(p["e164"].endswith(digits) for p in c["phones"]))]
    return web.json_response({"items": items})


def _cards_role(request: web.Request) -> None:
    if request.app[STANDIN].cards_for_managers_only:
        require(request, "manager", "crm")
    else:
        require(request, "manager", "operator", "crm")


def _client(request: web.Request) -> dict[str, Any]:
    _cards_role(request)
    found = request.app[STANDIN].clients.get(int(request.match_info["id"]))
    if found is None:
        raise ApiError(404, "not_found", "no such client")
    return found


async def get_client(request: web.Request) -> web.Response:
    require(request, "manager", "operator", "crm")
    return web.json_response(_client(request))


def card(client_id: int, name: str, phones: list[str], **fields: Any) -> dict[str, Any]:
    """crm_sync's Card shape."""
    out: dict[str, Any] = {"id": client_id, "name": name, "company": None, "responsible": None,
                           "source": None, "tags": [], "notes": None, "auto_created": False,
                           "created_at": "2026-11-01T09:00:00.000Z",
                           "updated_at": "2026-11-01T09:00:00.000Z",
                           "last_activity_at": "2026-11-01T09:00:00.000Z",
                           "phones": [{"e164": p, "raw": p} for p in phones],
                           "phone_count": len(phones), "emails": []}
    out.update(fields)
    return out


TEXT_FIELDS = ("name", "company", "responsible", "source", "notes")


def _check_fields(body: Any, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ApiError(422, "invalid_body", "a JSON object is required")
    extra = sorted(set(body) - allowed)
    if extra:
        raise ApiError(422, "invalid_field", f"unknown field(s): {', '.join(extra)}")
    return body


async def patch_client(request: web.Request) -> web.Response:
    require(request, "manager", "operator", "crm")
    found = _client(request)
    body = _check_fields(await request.json(), {*TEXT_FIELDS, "tags", "emails", "add_phones",
                                                "remove_phones"})
    for key in (*TEXT_FIELDS, "tags", "emails"):
        if body.get(key) is not None:
            found[key] = body[key]
    kept = [p for p in found["phones"] if p["e164"] not in body.get("remove_phones", [])]
    kept += [{"e164": n, "raw": n} for n in body.get("add_phones", [])]
    found["phones"], found["phone_count"] = kept, len(kept)
    return web.json_response(found)


async def create_client(request: web.Request) -> web.Response:
    require(request, "manager", "operator", "crm")
    data = request.app[STANDIN]
    body = _check_fields(await request.json(), {*TEXT_FIELDS, "tags", "emails", "phones"})
    if not (body.get("name") or "").strip():
        raise ApiError(422, "invalid_field", "name: the name is empty")
    made = card(next(data.ids), body["name"], body.get("phones") or [],
                **{k: body[k] for k in (*TEXT_FIELDS[1:], "tags", "emails") if body.get(k) is not None})
    data.clients[made["id"]] = made
    return web.json_response(made, status=201)


async def client_timeline(request: web.Request) -> web.Response:
    """crm_sync timeline entries: {id, kind, call_id, payload, at}, newest first."""
    require(request, "manager", "operator", "crm")
    data = request.app[STANDIN]
    found = _client(request)
    async with request.app[RUNTIME].engine.connect() as conn:
        rows = (await conn.execute(sa.select(calls).where(calls.c.client_id == found["id"]))).all()
    items: list[dict[str, Any]] = []
    for r in rows:
        payload = {k: v for k, v in record(r, data, detail=False).items()
                   if k in ("direction", "status", "missed", "operator", "customer_number", "did",
                            "wait_seconds", "talk_seconds", "started_at", "answered_at", "ended_at",
                            "pbx", "linkedid")}
        payload["links"] = ({"recording": {"state": "ready", "duration_seconds": 3.84}}
                            if r.id in data.recordings else {})
        items.append({"id": 100 + r.id, "kind": "call", "call_id": r.id, "payload": payload,
                      "at": iso(r.started_at)})
        if r.id in data.recordings:
            items.append({"id": 500 + r.id, "kind": "recording", "call_id": r.id,
                          "payload": {"state": "ready"}, "at": iso(r.ended_at)})
    items += [{"id": 900 + t["id"], "kind": "task", "call_id": t["created_by_call_id"],
               "payload": {"task_id": t["id"], **t}, "at": t["created_at"]}
              for t in data.tasks if t["client_id"] == found["id"]]
    items += data.notes.get(found["id"], [])
    items.sort(key=lambda e: e["id"], reverse=True)
    return web.json_response({"items": items, "next_before_id": None})


async def list_tasks(request: web.Request) -> web.Response:
    _cards_role(request)
    who = require(request, "manager", "operator", "crm")
    assignee = request.query.get("assignee")
    status = request.query.get("status")
    tasks = [t for t in request.app[STANDIN].tasks
             if (who.role != "operator" or t["assignee"] == who.extension)
             and (not assignee or t["assignee"] == assignee) and (not status or t["status"] == status)]
    return web.json_response({"items": tasks})


async def close_task(request: web.Request) -> web.Response:
    require(request, "manager", "operator", "crm")
    for task in request.app[STANDIN].tasks:
        if task["id"] == int(request.match_info["id"]):
            task["status"] = "closed"
            task["closed_at"] = "2026-11-26T23:00:00.000Z"
            return web.json_response(task)
    raise ApiError(404, "not_found", "no such task")


async def click_to_call(request: web.Request) -> web.Response:
    who = require(request, "operator", "crm")
    body = await request.json()
    if who.role == "operator" and body.get("extension") != who.extension:
        raise ApiError(403, "forbidden", "operators call from their own extension only")
    data = request.app[STANDIN]
    entry = {"id": f"c2c-{next(data.ids)}", "state": "queued", **body}
    data.click_to_call.append(entry)
    return web.json_response(entry, status=202)


async def events(request: web.Request) -> web.StreamResponse:
    who = require(request, "manager", "operator", "crm")
    bus = request.app[RUNTIME].bus

    def mine(message: dict[str, Any]) -> bool:  # as pbx_bridge.events.messages.accepts
        return who.role != "operator" or (who.extension is not None
                                          and who.extension in message.get("extensions", ()))

    ws = web.WebSocketResponse(heartbeat=20)
    await ws.prepare(request)
    with bus.subscribe(mine, maxsize=100) as sub:
        async def pump() -> None:
            while (message := await sub.get()) is not None:
                await ws.send_json(message)

        task = asyncio.create_task(pump())
        try:
            async for msg in ws:
                if msg.type == WSMsgType.ERROR:
                    break
        finally:
            task.cancel()
    return ws


ROUTES: list[tuple[str, str, Any]] = [
    ("GET", "/api/v1/calls", list_calls),
    ("GET", r"/api/v1/calls/{id:\d+}", get_call),
    ("GET", r"/api/v1/calls/{id:\d+}/recording", get_recording),
    ("GET", r"/api/v1/calls/{id:\d+}/transcript", get_transcript),
    ("GET", "/api/v1/clients", list_clients),
    ("POST", "/api/v1/clients", create_client),
    ("GET", r"/api/v1/clients/{id:\d+}", get_client),
    ("PATCH", r"/api/v1/clients/{id:\d+}", patch_client),
    ("GET", r"/api/v1/clients/{id:\d+}/timeline", client_timeline),
    ("GET", "/api/v1/tasks", list_tasks),
    ("POST", r"/api/v1/tasks/{id:\d+}/close", close_task),
    ("POST", "/api/v1/click-to-call", click_to_call),
    ("GET", "/api/v1/events", events),
]


def install(app: web.Application, data: StandinData) -> list[str]:
    """Add the routes the app lacks; returns the paths that are stand-ins."""
    app[STANDIN] = data
    existing = {(route.method, route.resource.canonical) for route in app.router.routes()
                if route.resource is not None}
    added = []
    for method, path, handler in ROUTES:
        canonical = path.replace(r":\d+", "")
        if (method, canonical) not in existing:
            app.router.add_route(method, path, handler)
            added.append(f"{method} {canonical}")
    return added
