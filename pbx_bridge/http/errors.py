"""Errors in one shape for every endpoint: {"error": {"code": ..., "message": ...}}."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web

log = logging.getLogger("pbx_bridge.http")


class ApiError(Exception):
    def __init__(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.json_response(
        {"error": {"code": code, "message": message}}, status=status, headers=headers
    )


_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 406: "not_acceptable", 411: "length_required",
               413: "payload_too_large", 414: "uri_too_long", 415: "unsupported_media_type",
               416: "range_not_satisfiable", 422: "unprocessable", 429: "rate_limited",
               431: "headers_too_large"}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """ApiError and aiohttp's own HTTP errors become the one JSON error shape."""
    try:
        response = await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message, exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        code = _HTTP_CODES.get(exc.status, "error")
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
        return error_response(exc.status, code, exc.reason, headers)
    except Exception:
        # A bug must still answer in the one error shape, and say nothing about internals.
        log.exception("http.unhandled_error", extra={"kv": {"path": request.path}})
        return error_response(500, "internal_error", "internal error")
    # aiohttp's static files answer a missing file with an empty 404 of their own, decided only
    # when the response is sent: look first (the path is the one aiohttp resolved inside the dir).
    if isinstance(response, web.FileResponse) and not await asyncio.to_thread(
            os.path.isfile, response._path):
        return error_response(404, "not_found", "Not Found")
    return response
