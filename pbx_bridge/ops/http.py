"""/readyz (database and every PBX connection) and /metrics."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa
from aiohttp import web

from pbx_bridge.http.access_log import REQUEST_OBSERVERS
from pbx_bridge.http.app_keys import RUNTIME
from pbx_bridge.http.auth import require
from pbx_bridge.ops.metrics import METRICS, Metrics, connection_state, metrics_handler, observe_request
from pbx_bridge.runtime import Runtime
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
    # A standby is ready too (it serves reads); a CEL source that is down is degraded, not down.
    body: dict[str, object] = {"status": "ready" if ready else "not_ready", "checks": checks,
                               "role": role_of(runtime), "cel": cel_of(runtime),
                               # Not a readiness check (calls are logged whatever the model), but said
                               # here: which model transcribes in which language, and a warning when
                               # it is not the region's language.
                               "transcription": model_info(runtime.settings)}
    leadership = runtime.services.get("leadership")
    if leadership is not None:
        body["standby"] = leadership.describe()
    # A native CRM connector's state, backlog and dead letters: shown, not part of readiness (a
    # CRM that is down loses nothing; the bridge itself is ready).
    connector = runtime.services.get("crm_connector")
    if connector is not None:
        try:
            body["crm"] = await connector.observe()
        except (OSError, sa.exc.SQLAlchemyError) as exc:
            body["crm"] = {"state": "unknown", "detail": type(exc).__name__}
    return web.json_response(body, status=200 if ready else 503)


def role_of(runtime: Runtime) -> str:
    leadership = runtime.services.get("leadership")
    return str(leadership.role) if leadership is not None else "alone"


def cel_of(runtime: Runtime) -> dict[str, object]:
    """Each PBX's CEL source and backfill lag (an empty map: no CEL source configured)."""
    return {b.pbx: {"state": b.source.state, "error": b.source.last_error or None,
                    "backfill_lag_seconds": None if b.lag_seconds is None else round(b.lag_seconds, 1)}
            for b in runtime.services.get("cel") or []}


async def active(request: web.Request) -> web.Response:
    """For a load balancer or keepalived: 200 on the bridge that acts, 503 on a standby."""
    role = role_of(request.app[RUNTIME])
    return web.json_response({"role": role}, status=200 if role in ("active", "alone") else 503)


def setup(app: web.Application) -> None:
    app[METRICS] = Metrics()
    app.setdefault(REQUEST_OBSERVERS, []).append(observe_request)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/healthz/active", active)
    app.router.add_get("/metrics", metrics_handler)
