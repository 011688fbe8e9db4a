"""`GET /api/v1/routing/responsible?number=...`: the dialplan asks, with CURL(), which operator is
responsible for an inbound caller. The answer is the extension as text/plain, empty when none,
so the dialplan falls back to its queue. Bearer token with the crm role (Asterisk 16+ sends it
with CURLOPT(httpheader)).
"""

from __future__ import annotations

from aiohttp import web

from pbx_bridge.clients.caller_lookup import CallerLookup
from pbx_bridge.crm_connectors.options import match_settings
from pbx_bridge.http.app_keys import RUNTIME
from pbx_bridge.http.auth import require
from pbx_bridge.http.errors import ApiError

PATH = "/api/v1/routing/responsible"
LOOKUP: web.AppKey[CallerLookup] = web.AppKey("crm_caller_lookup", CallerLookup)


async def responsible(request: web.Request) -> web.Response:
    require(request, "crm")
    number = request.query.get("number", "").strip()
    if not number:
        raise ApiError(422, "invalid_number", "the number query parameter is required")
    if len(number) > 64:
        raise ApiError(422, "invalid_number", "the number is longer than 64 characters")
    match = await request.app[LOOKUP].match(number)
    extension = match.client.responsible if match.client is not None else None
    return web.Response(text=extension or "", content_type="text/plain")


async def _open(app: web.Application) -> None:
    runtime = app[RUNTIME]
    app[LOOKUP] = CallerLookup(runtime.engine, match_settings(runtime.settings))


async def _close(app: web.Application) -> None:
    app[LOOKUP].close()


def setup(app: web.Application) -> None:
    app.router.add_get(PATH, responsible)
    app.on_startup.append(_open)
    app.on_cleanup.append(_close)
