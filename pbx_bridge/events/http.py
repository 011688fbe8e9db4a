"""GET /api/v1/events: live events over WebSocket, or Server-Sent Events for
`Accept: text/event-stream`. The first message is {"type": "ready"}: from then on nothing
published is missed. A client that cannot keep up is disconnected, never waited for.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import struct
from collections.abc import Callable, Iterator
from typing import Any

from aiohttp import WSCloseCode, web

from pbx_bridge.bus import Message, Subscription
from pbx_bridge.events.messages import TYPES, accepts, now_iso
from pbx_bridge.events.stream_guard import GUARD, StreamGuard, Watched, guard_ctx
from pbx_bridge.http.app_keys import RUNTIME
from pbx_bridge.http.auth import CREDENTIAL, CREDENTIAL_CHECKS, Principal, require
from pbx_bridge.http.errors import ApiError
from pbx_bridge.log import event as log_event
from pbx_bridge.ops.metrics import METRICS

log = logging.getLogger("pbx_bridge.events")

SSE_KEEPALIVE_SECONDS = 15.0
# Close code for "you were too slow": 1008 policy violation, with a reason text.
SLOW_CLOSE = WSCloseCode.POLICY_VIOLATION
# Close code for "your credential no longer holds" (revoked, signed out, role changed): 4401, in
# the range RFC 6455 leaves to applications, echoing HTTP 401.
REVOKED_CLOSE = 4401


def _filter(who: Principal, types: frozenset[str] | None) -> Callable[[Message], bool] | None:
    def accept(message: Message) -> bool:
        if types is not None and message.get("type") not in types:
            return False
        if who.role == "operator":
            return accepts(message, who.extension)
        return True

    return accept if (types is not None or who.role == "operator") else None


def _types(request: web.Request) -> frozenset[str] | None:
    raw = request.query.get("types")
    if not raw:
        return None
    wanted = frozenset(t.strip() for t in raw.split(",") if t.strip())
    unknown = wanted - set(TYPES)
    if unknown:
        raise ApiError(422, "invalid_parameter", f"unknown event types: {', '.join(sorted(unknown))}")
    return wanted


@contextlib.contextmanager
def _watched(request: web.Request, who: Principal, sub: Subscription) -> Iterator[Watched | None]:
    """The stream under the guard, by the credential that authenticated it."""
    credential = request.get(CREDENTIAL)
    guard: StreamGuard = request.app[GUARD]
    if credential is None or not guard.watches(credential.kind):
        yield None
        return
    with guard.watch(who, credential.kind, credential.key, sub) as watched:
        yield watched


async def events(request: web.Request) -> web.StreamResponse:
    who = require(request, "manager", "operator")
    types = _types(request)
    runtime = request.app[RUNTIME]
    settings = runtime.settings.api
    # No permessage-deflate (browsers ask for it): a message is a few hundred bytes, and deflate
    # would be paid once per message per client instead of once per message.
    ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=64 * 1024, compress=False)
    if ws.can_prepare(request).ok:
        return await _websocket(request, ws, who, types, settings.event_queue_size,
                                settings.ws_send_timeout)
    if "text/event-stream" in request.headers.get("Accept", ""):
        return await _sse(request, who, types, settings.event_queue_size, settings.ws_send_timeout)
    raise ApiError(406, "not_acceptable",
                   "connect with a WebSocket, or ask for Accept: text/event-stream")


async def _websocket(request: web.Request, ws: web.WebSocketResponse, who: Principal,
                     types: frozenset[str] | None, queue_size: int,
                     send_timeout: float) -> web.WebSocketResponse:
    await ws.prepare(request)
    bus = request.app[RUNTIME].bus
    with bus.subscribe(_filter(who, types), maxsize=queue_size) as sub, \
            _watched(request, who, sub) as watched:
        sender = asyncio.create_task(_ws_sender(request, ws, sub, send_timeout, watched))
        try:
            # Reading keeps pings and the close handshake going; clients have nothing to say.
            async for _msg in ws:
                pass
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
    return ws


# What a client's socket may hold unsent before it has ws_send_timeout seconds to catch up.
WS_BUFFER_LIMIT = 256 * 1024


def text_frame(payload: bytes) -> bytes:
    """One unfragmented, unmasked WebSocket text frame (RFC 6455 section 5.2), as a server sends
    it: the same bytes for every client."""
    n = len(payload)
    if n < 126:
        header = bytes((0x81, n))
    elif n < 1 << 16:
        header = struct.pack("!BBH", 0x81, 126, n)
    else:
        header = struct.pack("!BBQ", 0x81, 127, n)
    return header + payload


class MessageEncoder:
    """Each message as JSON text, and as a WebSocket frame, once, however many clients receive
    it (the bus hands every subscriber the same dict); remembers the last few."""

    def __init__(self, size: int = 256) -> None:
        self._size = size
        # id(message) -> [message, its JSON text, its frame once asked for]; holding the message
        # keeps its id from being reused.
        self._recent: dict[int, list[Any]] = {}

    def _entry(self, message: Message) -> list[Any]:
        hit = self._recent.get(id(message))
        if hit is not None and hit[0] is message:
            return hit
        entry = [message, json.dumps(message, ensure_ascii=False, default=str), None]
        if len(self._recent) >= self._size:
            del self._recent[next(iter(self._recent))]
        self._recent[id(message)] = entry
        return entry

    def text(self, message: Message) -> str:
        text: str = self._entry(message)[1]
        return text

    def frame(self, message: Message) -> bytes:
        entry = self._entry(message)
        if entry[2] is None:
            entry[2] = text_frame(entry[1].encode())
        frame: bytes = entry[2]
        return frame


ENCODER: web.AppKey[MessageEncoder] = web.AppKey("live_event_encoder", MessageEncoder)


async def _drained(transport: asyncio.WriteTransport, sub: Subscription,
                   timeout: float) -> None:  # noqa: ASYNC109
    """Until the socket has taken most of what waits for it; TimeoutError if it will not, or as
    soon as the bus has dropped the client for falling too far behind."""
    async with asyncio.timeout(timeout):
        while transport.get_write_buffer_size() > WS_BUFFER_LIMIT // 2:
            if transport.is_closing() or sub.dropped_for_slowness:
                raise ConnectionError("client gone or dropped")
            await asyncio.sleep(0.02)


async def _ws_sender(request: web.Request, ws: web.WebSocketResponse, sub: Subscription,
                     send_timeout: float, watched: Watched | None = None) -> None:
    """Writes the pre-built frames straight to the socket, everything already queued in one
    write: with 100 clients, framing each message per client and one send per message was the
    bridge's largest cost at 50 calls/s (bench_soak). Safe because the frames are whole, and
    compress=False means no per-connection extension state; aiohttp's own writer (the ready
    message, pings, close) writes whole frames too."""
    encoder = request.app[ENCODER]
    transport = request.transport
    try:
        async with asyncio.timeout(send_timeout):
            await ws.send_str(json.dumps({"type": "ready", "at": now_iso()}))
        assert transport is not None
        closed = False
        while not closed:
            message = await sub.get()
            if message is None:
                break
            frames = [encoder.frame(message)]
            while not sub.queue.empty():
                more = sub.queue.get_nowait()
                if more is None:
                    closed = True
                    break
                frames.append(encoder.frame(more))
            if transport.is_closing():
                raise ConnectionError("client gone")
            transport.write(b"".join(frames))
            if transport.get_write_buffer_size() > WS_BUFFER_LIMIT:
                await _drained(transport, sub, send_timeout)
    except (TimeoutError, ConnectionError, RuntimeError):
        sub.dropped_for_slowness = True
    if sub.dropped_for_slowness:
        request.app[METRICS].slow_clients.inc()
        log_event(log, logging.INFO, "events.slow_client_dropped", transport="websocket")
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ws.close(code=SLOW_CLOSE, message=b"too slow"), 1.0)
        # A client that does not read cannot take the close frame either: cut the connection.
        if request.transport is not None:
            request.transport.abort()
    elif watched is not None and watched.revoked:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ws.close(code=REVOKED_CLOSE, message=b"credentials revoked"), 1.0)
        if request.transport is not None and not ws.closed:
            request.transport.abort()
    else:
        await ws.close()


async def _sse(request: web.Request, who: Principal, types: frozenset[str] | None, queue_size: int,
               send_timeout: float) -> web.StreamResponse:
    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    await response.prepare(request)
    bus = request.app[RUNTIME].bus
    with bus.subscribe(_filter(who, types), maxsize=queue_size) as sub, \
            _watched(request, who, sub):
        try:
            async with asyncio.timeout(send_timeout):
                await response.write(_sse_frame({"type": "ready", "at": now_iso()}))
            while True:
                try:
                    message = await asyncio.wait_for(sub.get(), SSE_KEEPALIVE_SECONDS)
                except TimeoutError:
                    async with asyncio.timeout(send_timeout):
                        await response.write(b": keepalive\n\n")
                    continue
                if message is None:
                    break
                async with asyncio.timeout(send_timeout):
                    await response.write(_sse_frame(request.app[ENCODER].text(message)))
        except (TimeoutError, ConnectionError):
            sub.dropped_for_slowness = True
        if sub.dropped_for_slowness:
            request.app[METRICS].slow_clients.inc()
            log_event(log, logging.INFO, "events.slow_client_dropped", transport="sse")
            if request.transport is not None:
                request.transport.abort()
    return response


def _sse_frame(message: Message | str) -> bytes:
    data = message if isinstance(message, str) else json.dumps(message, ensure_ascii=False, default=str)
    return f"data: {data}\n\n".encode()


def setup(app: web.Application) -> None:
    runtime = app[RUNTIME]
    from pbx_bridge.events.notifier import Notifier

    settings = runtime.settings
    runtime.services.setdefault("notifier", Notifier(runtime.bus, settings.crm.did_sources,
                                                     settings.phone.default_region))
    app[ENCODER] = MessageEncoder()
    app[GUARD] = StreamGuard(runtime.engine, settings.api.token_cache_seconds,
                             app[CREDENTIAL_CHECKS])
    app.cleanup_ctx.append(guard_ctx)
    app.router.add_get("/api/v1/events", events)
