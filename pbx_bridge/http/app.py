"""The aiohttp application: operations endpoints here, features add their routes."""

from __future__ import annotations

from aiohttp import web

from pbx_bridge.http.errors import error_middleware
from pbx_bridge.runtime import Runtime
from pbx_bridge.transcription import http as transcription_http

RUNTIME: web.AppKey[Runtime] = web.AppKey("runtime", Runtime)


async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def make_app(runtime: Runtime) -> web.Application:
    app = web.Application(client_max_size=1024 * 1024, middlewares=[error_middleware])
    app[RUNTIME] = runtime
    app.router.add_get("/healthz", healthz)
    transcription_http.setup(app)
    return app
