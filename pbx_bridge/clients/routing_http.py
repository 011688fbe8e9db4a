"""`GET /api/v1/routing/responsible?number=...`: the dialplan asks, with CURL(), which operator is
responsible for an inbound caller. The answer is the extension as text/plain, empty when none,
so the dialplan falls back to its queue. Bearer token with the crm role (Asterisk 16+ sends it
with CURLOPT(httpheader)).
"""

from __future__ import annotations

from aiohttp import web

from crm_sync.routing import responsible_for
from pbx_bridge.clients.options import match_settings
from pbx_bridge.http.app_keys import RUNTIME
from pbx_bridge.http.auth import require
from pbx_bridge.http.errors import ApiError

PATH = "/api/v1/routing/responsible"


async def responsible(request: web.Request) -> web.Response:
    require(request, "crm")
    number = request.query.get("number", "").strip()
    if not number:
        raise ApiError(422, "invalid_number", "the number query parameter is required")
    if len(number) > 64:
        raise ApiError(422, "invalid_number", "the number is longer than 64 characters")
    runtime = request.app[RUNTIME]
    async with runtime.engine.connect() as conn:
        extension = await responsible_for(conn, number, match_settings(runtime.settings))
    return web.Response(text=extension or "", content_type="text/plain")


def setup(app: web.Application) -> None:
    app.router.add_get(PATH, responsible)
