"""/readyz (database and every PBX connection) and /metrics."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa
from aiohttp import web

from pbx_bridge.http.app_keys import RUNTIME
from pbx_bridge.http.auth import require
from pbx_bridge.ops.metrics import METRICS, Metrics, connection_state, metrics_handler


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
    body: dict[str, object] = {"status": "ready" if ready else "not_ready", "checks": checks}
    # A native CRM connector's state, backlog and dead letters: shown, not part of readiness (a
    # CRM that is down loses nothing; the bridge itself is ready).
    connector = runtime.services.get("crm_connector")
    if connector is not None:
        try:
            body["crm"] = await connector.observe()
        except (OSError, sa.exc.SQLAlchemyError) as exc:
            body["crm"] = {"state": "unknown", "detail": type(exc).__name__}
    return web.json_response(body, status=200 if ready else 503)


def setup(app: web.Application) -> None:
    app[METRICS] = Metrics()
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_handler)
