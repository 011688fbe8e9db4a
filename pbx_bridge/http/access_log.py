"""One log line per HTTP request: method, path, status, time, and the caller (token:<id>).

The path is logged without its query string (it may carry ?access_token=), and never a header.
The one timing middleware: what else wants each request's status and duration (the metrics)
registers an observer under REQUEST_OBSERVERS instead of timing the request again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from aiohttp import web

from pbx_bridge.http.auth import PRINCIPAL
from pbx_bridge.http.errors import Handler
from pbx_bridge.log import event

log = logging.getLogger("pbx_bridge.http")

# Called with the request, its final status and its duration in seconds, once it is answered.
RequestObserver = Callable[[web.Request, int, float], None]
REQUEST_OBSERVERS: web.AppKey[list[RequestObserver]] = web.AppKey("request_observers", list)


@web.middleware
async def access_log_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    start = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        seconds = time.perf_counter() - start
        for observe in request.app.get(REQUEST_OBSERVERS, ()):
            observe(request, status, seconds)
        who = request.get(PRINCIPAL)
        event(log, logging.INFO if status < 500 else logging.WARNING, "http.request",
              method=request.method, path=request.path, status=status, ms=round(seconds * 1000, 2),
              caller=f"{who.kind}:{who.id}" if who is not None else None)
