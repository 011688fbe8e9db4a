"""A stand-in for the JSON API of issues 5, 6 and 7, for the browser tests of the web UI.

The UI depends only on the API's paths and JSON shapes; the real API, recordings and
transcripts were being built in parallel and were not merged when these tests were written.
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
from pbx_bridge.http.app import RUNTIME
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


STANDIN: web.AppKey[StandinData] = web.AppKey("standin", StandinData)


def record(row: Any, data: StandinData) -> dict[str, Any]:
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
    out["recording"] = ({"url": f"/api/v1/calls/{row.id}/recording", "status": "ready"}
                        if row.id in data.recordings else None)
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
    for name in ("direction", "status", "did"):
        if q.get(name):
            query = query.where(getattr(calls.c, name) == q[name])
    if q.get("missed") in ("true", "1"):
        query = query.where(calls.c.missed.is_(True))
    if q.get("number"):
        query = query.where(calls.c.customer_number.contains(q["number"].replace(" ", "")))
    async with request.app[RUNTIME].engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    ext = who.extension if who.role == "operator" else q.get("operator")
    if ext:
        rows = [r for r in rows if r.operator == ext or ext in (r.operators_rung or [])]
    items = [record(r, data) for r in rows]
    if q.get("q"):
        needle = q["q"].lower()
        found = []
        for item in items:
            text = " ".join(t["text"] for t in data.transcripts.get(item["id"], {}).get("turns", []))
            if needle in text.lower():
                at = text.lower().index(needle)
                item["snippet"] = text[max(0, at - 20): at + len(needle) + 20]
                found.append(item)
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
    needle = request.query.get("q", "").lower().replace(" ", "")
    items = [c for c in request.app[STANDIN].clients.values()
             if not needle or needle in c["name"].lower().replace(" ", "")
             or any(needle.lstrip("+8") in p["number"] for p in c["phones"])]
    return web.json_response({"items": items, "next_cursor": None})


def _client(request: web.Request) -> dict[str, Any]:
    found = request.app[STANDIN].clients.get(int(request.match_info["id"]))
    if found is None:
        raise ApiError(404, "not_found", "no such client")
    return found


async def get_client(request: web.Request) -> web.Response:
    require(request, "manager", "operator", "crm")
    return web.json_response(_client(request))


def _apply(card: dict[str, Any], body: dict[str, Any]) -> None:
    for key in ("name", "company", "email", "notes", "responsible_operator"):
        if key in body:
            card[key] = body[key]
    if "phones" in body:
        card["phones"] = [{"number": p, "label": ""} for p in body["phones"]]


async def patch_client(request: web.Request) -> web.Response:
    require(request, "manager", "operator", "crm")
    card = _client(request)
    _apply(card, await request.json())
    return web.json_response(card)


async def create_client(request: web.Request) -> web.Response:
    require(request, "manager", "operator", "crm")
    data = request.app[STANDIN]
    card: dict[str, Any] = {"id": next(data.ids), "name": "", "company": "", "email": "",
                            "notes": "", "responsible_operator": None, "phones": []}
    _apply(card, await request.json())
    data.clients[card["id"]] = card
    return web.json_response(card, status=201)


async def client_timeline(request: web.Request) -> web.Response:
    require(request, "manager", "operator", "crm")
    data = request.app[STANDIN]
    card = _client(request)
    async with request.app[RUNTIME].engine.connect() as conn:
        rows = (await conn.execute(sa.select(calls).where(calls.c.client_id == card["id"]))).all()
    items: list[dict[str, Any]] = [{"kind": "call", "at": iso(r.started_at), "call": record(r, data)}
                                   for r in rows]
    items += [{"kind": "task", "at": t["created_at"], "task": t} for t in data.tasks
              if t["client_id"] == card["id"]]
    items += data.notes.get(card["id"], [])
    return web.json_response({"items": items})


async def list_tasks(request: web.Request) -> web.Response:
    who = require(request, "manager", "operator", "crm")
    tasks = [t for t in request.app[STANDIN].tasks
             if who.role != "operator" or t.get("operator") == who.extension]
    return web.json_response({"items": tasks})


async def close_task(request: web.Request) -> web.Response:
    require(request, "manager", "operator", "crm")
    for task in request.app[STANDIN].tasks:
        if task["id"] == int(request.match_info["id"]):
            task["status"] = "closed"
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

    def mine(message: dict[str, Any]) -> bool:
        return who.role != "operator" or message.get("extension") in (None, who.extension)

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
