"""The aiohttp application: operations endpoints here, features add their routes."""

from __future__ import annotations

from aiohttp import web

from pbx_bridge.http.errors import error_middleware
from pbx_bridge.runtime import Runtime

RUNTIME: web.AppKey[Runtime] = web.AppKey("runtime", Runtime)


async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def make_app(runtime: Runtime) -> web.Application:
    app = web.Application(client_max_size=1024 * 1024, middlewares=[error_middleware])
    app[RUNTIME] = runtime
    app.router.add_get("/healthz", healthz)
    from pbx_bridge.web.routes import setup as setup_web_ui  # local: the web UI imports RUNTIME

    setup_web_ui(app)
    return app
