"""Hostile HTTP clients against the real app on a real TCP port: path traversal, oversized bodies,
invalid JSON, huge query strings and headers, clients that trickle bytes. Each gets a clean 4xx
(in the one error shape where the app answers), and the server keeps answering other clients:
a /healthz from a well-behaved client is timed during every attack."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from pbx_bridge.auth.tokens import create_token
from pbx_bridge.config import Settings
from pbx_bridge.db.engine import make_sessionmaker
from pbx_bridge.http import limits
from pbx_bridge.http.app import make_app
from pbx_bridge.recording.install import install as install_recordings
from pbx_bridge.runtime import Runtime

pytestmark = pytest.mark.timeout(60)

# /healthz from another client while under attack: a responsive server answers in milliseconds
# on an idle loopback; the bound leaves room for a loaded 2-core CI machine.
RESPONSIVE_SECONDS = 1.0


@dataclass
class Server:
    port: int
    token: str
    runner: web.AppRunner

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture
async def server(settings: Settings, engine: AsyncEngine) -> AsyncIterator[Server]:
    settings.api.token_cache_seconds = 60.0
    runtime = Runtime(settings=settings, engine=engine, sessions=make_sessionmaker(engine))
    install_recordings(runtime)  # the recordings routes as `serve` has them (service not started)
    async with engine.begin() as conn:
        _info, token = await create_token(conn, name="hostile", role="admin")
    runner = web.AppRunner(make_app(runtime), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield Server(port, token, runner)
    await runner.cleanup()


async def healthz_seconds(server: Server) -> float:
    started = time.perf_counter()
    async with aiohttp.ClientSession() as http, http.get(server.base + "/healthz") as resp:
        assert resp.status == 200
    return time.perf_counter() - started


async def raw_request(server: Server, head: bytes, body: bytes = b"",
                      timeout: float = 10.0) -> tuple[int, bytes]:  # noqa: ASYNC109
    """Bytes exactly as given (no client-side normalisation); the status line and body back."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(head + body)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(1 << 20), timeout)
        while data and b"\r\n\r\n" not in data:
            more = await asyncio.wait_for(reader.read(1 << 20), timeout)
            if not more:
                break
            data += more
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    status_line = data.split(b"\r\n", 1)[0]
    # aiohttp answers a request it could not parse as HTTP/1.0.
    assert status_line.startswith((b"HTTP/1.1 ", b"HTTP/1.0 ")), data[:200]
    return int(status_line.split()[1]), data


def error_shape(data: bytes) -> dict[str, str]:
    import json

    body = data.split(b"\r\n\r\n", 1)[1]
    parsed = json.loads(body)
    assert set(parsed) == {"error"} and set(parsed["error"]) == {"code", "message"}, parsed
    return parsed["error"]  # type: ignore[no-any-return]


TRAVERSALS = [
    "/ui/static/../../../../etc/passwd",
    "/ui/static/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/ui/static/..%2f..%2f..%2f..%2fetc%2fpasswd",
    "/ui/static/....//....//etc/passwd",
    "/ui/static/%252e%252e/%252e%252e/etc/passwd",
    "/ui/static/..\\..\\..\\pbx_bridge\\config.py",
    "/api/v1/recordings/signed/..%2f..%2f..%2fetc%2fpasswd",
    "/api/v1/recordings/signed/../../../../etc/passwd",
    "/api/v1/calls/..%2f..%2fetc%2fpasswd/recording",
    "/api/v1/calls/1%00.wav/recording",
    "//etc/passwd",
    "/%2e%2e/%2e%2e/etc/passwd",
]


@pytest.mark.parametrize("path", TRAVERSALS)
async def test_path_traversal_never_serves_a_file_outside(server: Server, path: str) -> None:
    head = (f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {server.token}\r\n"
            "Connection: close\r\n\r\n").encode()
    status, data = await raw_request(server, head)
    assert 400 <= status < 500, (path, status, data[:300])
    assert b"root:" not in data and b"class Settings" not in data and b"[server]" not in data


async def test_oversized_body_is_413_in_the_error_shape(server: Server) -> None:
    big = b'{"name": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    for path in ("/api/v1/clients", "/api/v1/click-to-call"):
        head = (f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {server.token}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(big)}\r\n"
                "Connection: close\r\n\r\n").encode()
        status, data = await raw_request(server, head, big)
        assert status == 413, (path, data[:300])
        assert error_shape(data)["code"] == "payload_too_large"
    assert await healthz_seconds(server) < RESPONSIVE_SECONDS


@pytest.mark.parametrize("body", [b"{not json", b"", b"\xff\xfe\x00", b"[1, 2", b'"just a string"',
                                  b"null", b"[]", b'{"a": ' * 5000])
async def test_invalid_json_is_400_or_422_in_the_error_shape(server: Server, body: bytes) -> None:
    async with aiohttp.ClientSession() as http:
        for method, path in (("POST", "/api/v1/clients"), ("PATCH", "/api/v1/clients/1"),
                             ("POST", "/api/v1/click-to-call"),
                             ("POST", "/api/v1/calls/1/legal-hold")):
            async with http.request(method, server.base + path, data=body, headers={
                    **server.auth, "Content-Type": "application/json"}) as resp:
                # 400: not JSON at all; 422: JSON of the wrong shape; 404: the id is unknown
                # (checked before the body by some handlers). Never a 5xx.
                assert resp.status in (400, 404, 422), (method, path, body[:20], resp.status)
                if body[:1] in (b"{", b"\xff", b"[") and body not in (b"[]",):
                    assert resp.status in (400, 404), (method, path, body[:20], resp.status)
                payload = await resp.json()
                assert set(payload) == {"error"} and set(payload["error"]) == {"code", "message"}


async def test_huge_query_string_and_headers_are_4xx_and_the_server_stays_up(server: Server) -> None:
    cases = [
        (f"GET /api/v1/calls?number={'9' * 100_000} HTTP/1.1\r\nHost: x\r\n"
         f"Authorization: Bearer {server.token}\r\nConnection: close\r\n\r\n").encode(),
        (f"GET /api/v1/calls?{'&'.join(f'a{i}=1' for i in range(20_000))} HTTP/1.1\r\n"
         f"Host: x\r\nAuthorization: Bearer {server.token}\r\nConnection: close\r\n\r\n").encode(),
        (f"GET /api/v1/calls HTTP/1.1\r\nHost: x\r\nX-Big: {'a' * 100_000}\r\n"
         f"Authorization: Bearer {server.token}\r\nConnection: close\r\n\r\n").encode(),
        (b"GET /api/v1/calls HTTP/1.1\r\nHost: x\r\n"
         + b"".join(b"X-H%d: v\r\n" % i for i in range(5_000)) + b"Connection: close\r\n\r\n"),
        (f"GET /api/v1/calls HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {'t' * 50_000}\r\n"
         "Connection: close\r\n\r\n").encode(),
    ]
    for head in cases:
        attack = asyncio.create_task(raw_request(server, head))
        assert await healthz_seconds(server) < RESPONSIVE_SECONDS
        status, data = await attack
        assert 400 <= status < 500, (head[:80], status, data[:300])


async def test_a_page_size_or_cursor_out_of_range_is_a_clean_4xx(server: Server) -> None:
    async with aiohttp.ClientSession() as http:
        for query in ("limit=999999999999999999999", "limit=-1", "cursor=%00%ff", "from=yesterday",
                      "cursor=" + "A" * 5000, "direction=sideways"):
            async with http.get(server.base + "/api/v1/calls?" + query, headers=server.auth) as resp:
                assert 400 <= resp.status < 500, (query, resp.status)
                payload = await resp.json()
                assert set(payload["error"]) == {"code", "message"}


async def _trickle(server: Server, data: bytes, every: float, stop: asyncio.Event) -> bytes:
    """Send `data` one byte per `every` seconds until `stop`; what the server answered."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    received = b""
    try:
        for byte in data:
            if stop.is_set() or reader.at_eof():
                break
            writer.write(bytes([byte]))
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            with contextlib.suppress(TimeoutError):
                received += await asyncio.wait_for(reader.read(4096), every)
            if received:
                break
    except ConnectionError:
        pass
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return received


async def test_slow_clients_trickling_bytes_do_not_block_others(server: Server) -> None:
    """200 connections trickling request heads, and 20 trickling a JSON body: /healthz from
    another client stays fast throughout."""
    stop = asyncio.Event()
    head = (f"GET /api/v1/calls HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {server.token}\r\n"
            "\r\n").encode()
    body = b'{"name": "slow", "phones": ["+74951234567"]}'
    slow_post = (f"POST /api/v1/clients HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {server.token}"
                 f"\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
                 ).encode()
    tasks = [asyncio.create_task(_trickle(server, head, 0.05, stop)) for _ in range(200)]
    posters = []
    for _ in range(20):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(slow_post)
        posters.append((reader, writer))
    try:
        worst = 0.0
        for _ in range(20):
            worst = max(worst, await healthz_seconds(server))
            for _reader, writer in posters:
                if not writer.is_closing():
                    writer.write(body[:1])  # the body, one byte at a time
            await asyncio.sleep(0.05)
        assert worst < RESPONSIVE_SECONDS, worst
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        for _reader, writer in posters:
            writer.close()


async def test_a_body_that_never_finishes_gets_408(server: Server,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A client that stops sending mid-body is answered 408 after the body timeout, instead of
    holding a handler (and whatever it holds) forever."""
    monkeypatch.setattr(limits, "BODY_TIMEOUT_SECONDS", 0.5)
    body = b'{"name": "never finished", "phones": ["+7495'
    head = (f"POST /api/v1/clients HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {server.token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body) + 100}\r\n\r\n").encode()
    started = time.perf_counter()
    status, data = await raw_request(server, head, body, timeout=10)
    assert status == 408, data[:300]
    assert error_shape(data)["code"] == "request_timeout"
    assert time.perf_counter() - started < 5


async def test_signed_recording_link_needs_no_token_but_a_valid_signature(server: Server) -> None:
    """The one token-free API path: a forged or garbage signature is a 4xx, never a file."""
    async with aiohttp.ClientSession() as http:
        for token in ("abc", "x" * 300, "1.2.3", "eyJjYWxsIjoxfQ.AAAA"):
            async with http.get(f"{server.base}/api/v1/recordings/signed/{token}") as resp:
                assert 400 <= resp.status < 500 and resp.status != 401, (token, resp.status)
                assert resp.content_type == "application/json"
