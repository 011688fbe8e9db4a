"""/readyz (database and every PBX connection) and /metrics."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa
from aiohttp import web

from pbx_bridge.http.app_keys import RUNTIME
from pbx_bridge.http.auth import require
from pbx_bridge.ops.metrics import METRICS, Metrics, connection_state, metrics_handler
from pbx_bridge.transcription.model_info import model_info


async def readyz(request: web.Request) -> web.Response:
    require(request, "manager")
    runtime = request.app[RUNTIME]
    checks: dict[str, str] = {}
    try:
        async with asyncio.timeout(2.0):
            async with runtime.engine.connect() as conn:
                await conn.execute(sa.text("SELECT 1"))
        checks["database"] = "ok"
    except (TimeoutError, OSError, sa.exc.SQLAlchemyError) as exc:
        checks["database"] = f"unavailable: {type(exc).__name__}"
    for name, connection in runtime.pbx.items():
        state = connection_state(connection)
        checks[f"pbx:{name}"] = "ok" if state == "connected" else state
    ready = all(v == "ok" for v in checks.values())
    # Not a readiness check (calls are logged whatever the model), but said here: which model
    # transcribes in which language, and a warning when it is not the region's language.
    return web.json_response({"status": "ready" if ready else "not_ready", "checks": checks,
                              "transcription": model_info(runtime.settings)},
                             status=200 if ready else 503)


def setup(app: web.Application) -> None:
    app[METRICS] = Metrics()
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_handler)
