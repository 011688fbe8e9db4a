"""One log line per HTTP request: method, path, status, time, and the caller (token:<id>).

The path is logged without its query string (it may carry ?access_token=), and never a header.
"""

from __future__ import annotations

import logging
import time

from aiohttp import web

from pbx_bridge.http.errors import Handler
from pbx_bridge.log import event

log = logging.getLogger("pbx_bridge.http")


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
        who = request.get("principal")
        event(log, logging.INFO if status < 500 else logging.WARNING, "http.request",
              method=request.method, path=request.path, status=status,
              ms=round((time.perf_counter() - start) * 1000, 2),
              caller=f"{who.kind}:{who.id}" if who is not None else None)
