"""POST /api/v1/click-to-call and GET /api/v1/click-to-call/{id}."""

from __future__ import annotations

import math

from aiohttp import web

from pbx_bridge.click_to_call.ratelimit import RateLimiter
from pbx_bridge.click_to_call.service import (
    SERVICE_KEY,
    ClickToCallError,
    ClickToCallService,
    NewRequest,
)
from pbx_bridge.http.app_keys import RUNTIME
from pbx_bridge.http.auth import require
from pbx_bridge.http.errors import ApiError
from pbx_bridge.http.params import field_int, field_str, json_object

SERVICE: web.AppKey[ClickToCallService] = web.AppKey("click_to_call", ClickToCallService)
LIMITER: web.AppKey[RateLimiter] = web.AppKey("click_to_call_limiter", RateLimiter)


def _api_error(exc: ClickToCallError) -> ApiError:
    headers = {}
    if exc.retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
    return ApiError(exc.status, exc.code, exc.message, headers)


async def create(request: web.Request) -> web.Response:
    who = require(request, "crm", "operator")
    data = await json_object(request)
    extension = field_str(data, "extension", required=True, max_len=16) or ""
    number = field_str(data, "number", required=True, max_len=64) or ""
    key = field_str(data, "idempotency_key", max_len=128)
    key = key or request.headers.get("Idempotency-Key") or None
    if key is not None and len(key) > 128:
        raise ApiError(422, "invalid_field", "'idempotency_key' is longer than 128 characters")
    client_id = field_int(data, "client_id")
    if who.role == "operator" and extension.strip() != who.extension:
        raise ApiError(403, "forbidden", "an operator may only call from their own extension")
    # Tokens and people number their ids separately: token 4 and user 4 are different callers.
    wait = request.app[LIMITER].take((who.kind, who.id))
    if wait > 0:
        raise ApiError(429, "rate_limited", "too many click-to-call requests from this caller",
                       {"Retry-After": str(max(1, math.ceil(wait)))})
    service = request.app[SERVICE]
    try:
        service.validate(NewRequest(extension, number, client_id, key))
        await service.check_known(extension)
        item, created = await service.create(NewRequest(extension, number, client_id, key), who.id,
                                             who.kind)
    except ClickToCallError as exc:
        error = _api_error(exc)
        leadership = request.app[RUNTIME].services.get("leadership")
        active_url = leadership.describe().get("active_url") if leadership is not None else None
        if exc.code == "standby" and active_url:
            error.headers["X-PBX-Bridge-Active"] = str(active_url)  # where to send it instead
        raise error from None
    return web.json_response(item.to_dict(), status=202 if created else 200)


async def show(request: web.Request) -> web.Response:
    who = require(request, "crm", "operator", "manager")
    item = await request.app[SERVICE].get(request.match_info["id"])
    if item is None or (who.role == "operator" and item.extension != who.extension):
        raise ApiError(404, "not_found", "no such click-to-call request")
    return web.json_response(item.to_dict())


def setup(app: web.Application) -> None:
    runtime = app[RUNTIME]
    service = runtime.services[SERVICE_KEY]  # made by the assembly, or by the server
    assert isinstance(service, ClickToCallService)
    app[SERVICE] = service
    cfg = runtime.settings.click_to_call
    app[LIMITER] = RateLimiter(cfg.rate_per_minute, cfg.burst)
    app.router.add_post("/api/v1/click-to-call", create)
    app.router.add_get("/api/v1/click-to-call/{id}", show)
