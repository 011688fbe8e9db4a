"""The HTTP server under the app: requests aiohttp cannot even parse get the API's one error shape.

aiohttp answers a request line or header beyond its 8 KiB limits, too many headers or bytes that
are not HTTP with a plain-text 400 that quotes the offending bytes back, before any middleware
runs, and logs each one as an error with a traceback. Here they get `{"error": {"code",
"message"}}` with the status that says what was wrong (414 for the request line, 431 for the
headers, 400 for the rest), nothing of the request quoted, and one log line.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from pbx_bridge.http.errors import error_response

log = logging.getLogger("pbx_bridge.http")
_METHODS = (b"GET", b"POST", b"PUT", b"PATCH", b"DELETE", b"HEAD", b"OPTIONS")


def _problem(exc: BadHttpMessage) -> tuple[int, str, str]:
    if isinstance(exc, LineTooLong):
        line = exc.args[0] if exc.args else b""
        line = bytes(line) if isinstance(line, bytes | bytearray) else str(line).encode()
        if line.startswith((b"/", b"http:", b"https:", *_METHODS)):
            return 414, "uri_too_long", "the request line is longer than the server accepts"
        return 431, "headers_too_large", "a request header is longer than the server accepts"
    if "header" in str(exc).lower():
        return 431, "headers_too_large", "the request headers are more than the server accepts"
    return 400, "bad_request", "not a valid HTTP request"


# aiohttp's default `Server: Python/3.x aiohttp/3.y` tells a scanner which known bugs to try.
SERVER_NAME = "pbx-bridge"


async def server_header(_request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: every response the app makes names the product, not its versions."""
    response.headers["Server"] = SERVER_NAME


class _Handler(RequestHandler):
    def handle_error(self, request: BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if status >= 500 or not isinstance(exc, BadHttpMessage) or request.writer.output_size > 0:
            fallback = super().handle_error(request, status, exc, message)
            fallback.headers["Server"] = SERVER_NAME
            return fallback
        status, code, text = _problem(exc)
        log.info("http.unparsable_request", extra={"kv": {"status": status, "reason": type(exc).__name__}})
        response = error_response(status, code, text, {"Server": SERVER_NAME})
        response.force_close()
        return response


class _Server(web.Server):
    def __call__(self) -> RequestHandler:
        return _Handler(self, loop=self._loop, **self._kwargs)


class AppRunner(web.AppRunner):
    """web.AppRunner whose connections answer unparsable requests in the error shape."""

    async def _make_server(self) -> web.Server:
        made = await super()._make_server()
        return _Server(made.request_handler, request_factory=made.request_factory,
                       handler_cancellation=made.handler_cancellation, loop=made._loop,
                       **made._kwargs)


def app_runner(app: web.Application, **kwargs: Any) -> web.AppRunner:
    return AppRunner(app, **kwargs)
