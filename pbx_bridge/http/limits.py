"""Request limits aiohttp does not set by itself: a client that trickles (or stops sending) a
request body is answered 408 after BODY_TIMEOUT_SECONDS instead of holding a handler forever.

Sizes are aiohttp's: the body by `client_max_size` (413), the request line and headers by the
parser's own limits (8 KiB per line/field: 400 / 414 / 431)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from pbx_bridge.http.errors import ApiError, Handler

BODY_TIMEOUT_SECONDS = 30.0
_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})


@web.middleware
async def body_timeout_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.method in _WITH_BODY and request.body_exists:
        try:
            # Read (and cache) the whole body here, bounded in time; handlers' request.json()
            # then reads from the cache.
            await asyncio.wait_for(request.read(), BODY_TIMEOUT_SECONDS)
        except TimeoutError:
            raise ApiError(408, "request_timeout", "the request body did not arrive in time",
                           {"Connection": "close"}) from None
    return await handler(request)
