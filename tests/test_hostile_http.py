"""Hostile HTTP clients against the bridge as `serve` assembles it, on a real TCP port: path
traversal, oversized bodies, invalid JSON and valid JSON nested 100,000 deep, huge query strings
(with a valid token) and headers, clients that trickle bytes. Each gets the 4xx that names what is
wrong, in the one error shape (also 404s, and requests too malformed for the app to see), and the
server keeps answering other clients: a /healthz from a well-behaved client is timed during every
attack."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import aiohttp
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from pbx_bridge.assembly import Bridge, assemble
from pbx_bridge.auth.tokens import create_token
from pbx_bridge.config import Settings
from pbx_bridge.db.schema import calls
from pbx_bridge.http import limits

pytestmark = pytest.mark.timeout(60)

# /healthz from another client while under attack: a responsive server answers in milliseconds
# on an idle loopback; the bound leaves room for a loaded 2-core CI machine.
RESPONSIVE_SECONDS = 1.0


@dataclass
class Server:
    port: int
    token: str
    bridge: Bridge

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture
async def server(settings: Settings, engine: AsyncEngine) -> AsyncIterator[Server]:
    settings.api.token_cache_seconds = 60.0
    settings.server.port = 0
    settings.simulator.enabled = False  # no PBX: the HTTP side alone
    settings.transcription.in_process = False
    bridge = assemble(settings, engine)
    await bridge.start()
    async with engine.begin() as conn:
        _info, token = await create_token(conn, name="hostile", role="admin")
    yield Server(bridge.http_port, token, bridge)
    await bridge.stop()


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


async def json_targets(server: Server) -> list[tuple[str, str]]:
    """Every endpoint that reads a JSON body, with ids that exist (so a 404 can answer nothing)."""
    async with aiohttp.ClientSession() as http:
        async with http.post(server.base + "/api/v1/clients", headers=server.auth,
                             json={"name": "Ivan Petrov", "phones": ["+74951234567"]}) as resp:
            assert resp.status == 201
            client_id = (await resp.json())["id"]
    async with server.bridge.runtime.engine.begin() as conn:
        now = datetime.now(UTC)
        call_id = (await conn.execute(calls.insert().values(
            pbx="main", linkedid="hostile-1", state="ended", operators_rung=[], transfers=[], tags=[],
            started_at=now, updated_at=now).returning(calls.c.id))).scalar_one()
    return [("POST", "/api/v1/clients"), ("PATCH", f"/api/v1/clients/{client_id}"),
            ("POST", "/api/v1/click-to-call"), ("POST", f"/api/v1/calls/{call_id}/legal-hold")]


@pytest.mark.parametrize(("body", "status"), [
    (b"{not json", 400), (b"", 400), (b"\xff\xfe\x00", 400), (b"[1, 2", 400), (b'{"a": ' * 5000, 400),
    (b'"just a string"', 400), (b"null", 400), (b"[]", 400)])
async def test_invalid_json_is_400_in_the_error_shape(server: Server, body: bytes, status: int) -> None:
    """Not JSON, or not a JSON object: 400 on every endpoint that reads a body (the ids exist:
    no 404 can stand in for it)."""
    async with aiohttp.ClientSession() as http:
        for method, path in await json_targets(server):
            async with http.request(method, server.base + path, data=body, headers={
                    **server.auth, "Content-Type": "application/json"}) as resp:
                assert resp.status == status, (method, path, body[:20], resp.status)
                payload = await resp.json()
                assert set(payload) == {"error"} and set(payload["error"]) == {"code", "message"}
                assert payload["error"]["code"] == "bad_request"


def nested(depth: int, kind: str) -> bytes:
    """Valid JSON, `depth` levels deep: {"a": {"a": ... 1 ...}} or [[[...]]]."""
    if kind == "object":
        return b'{"a": ' * depth + b"1" + b"}" * depth
    return b"[" * depth + b"]" * depth


@pytest.mark.parametrize("kind", ["object", "array"])
async def test_valid_json_nested_100000_deep_is_a_clean_400(server: Server, kind: str) -> None:
    """JSON that is valid but nested 100,000 deep: a 400 that says so, on every endpoint that
    reads a body. The same shape nested twice is answered on its merits (no 400): it is the
    depth that is refused."""
    deep = nested(100_000, kind)
    assert deep.count(b"{" if kind == "object" else b"[") == 100_000 and len(deep) < 1024 * 1024
    shallow = nested(2, kind)
    assert json.loads(shallow)  # the same JSON, shallow, parses
    async with aiohttp.ClientSession() as http:
        for method, path in await json_targets(server):
            headers = {**server.auth, "Content-Type": "application/json"}
            async with http.request(method, server.base + path, data=deep, headers=headers) as resp:
                assert resp.status == 400, (method, path, resp.status)
                assert (await resp.json())["error"] == {
                    "code": "bad_request", "message": "the JSON body is nested too deeply"}, path
            body = nested(2, kind) if kind == "array" else b'{"name": {"a": 1}, "hold": {"a": 1}}'
            async with http.request(method, server.base + path, data=body, headers=headers) as resp:
                message = (await resp.json())["error"]["message"]
                assert "nested" not in message, (method, path, resp.status, message)
    assert await healthz_seconds(server) < RESPONSIVE_SECONDS


async def test_huge_query_string_and_headers_are_4xx_and_the_server_stays_up(server: Server) -> None:
    """With a valid token (the same request with a short query is 200): a query string beyond
    the request line's limit is 414, headers beyond theirs 431, in the error shape, without the
    request quoted back; a long query within the limit reaches the app and gets its 422."""
    token = f"Authorization: Bearer {server.token}\r\n"
    status, data = await raw_request(server, (f"GET /api/v1/calls?number=84951234567 HTTP/1.1\r\n"
                                              f"Host: x\r\n{token}Connection: close\r\n\r\n").encode())
    assert status == 200, data[:300]
    cases = [
        (f"GET /api/v1/calls?number={'9' * 100_000} HTTP/1.1\r\nHost: x\r\n{token}"
         "Connection: close\r\n\r\n", 414, "uri_too_long"),
        (f"GET /api/v1/calls?{'&'.join(f'a{i}=1' for i in range(20_000))} HTTP/1.1\r\nHost: x\r\n"
         f"{token}Connection: close\r\n\r\n", 414, "uri_too_long"),
        (f"GET /api/v1/calls?number={'9' * 7_900} HTTP/1.1\r\nHost: x\r\n{token}"
         "Connection: close\r\n\r\n", 422, None),  # the app's own answer on `number`
        (f"GET /api/v1/calls HTTP/1.1\r\nHost: x\r\nX-Big: {'a' * 100_000}\r\n{token}"
         "Connection: close\r\n\r\n", 431, "headers_too_large"),
        (f"GET /api/v1/calls HTTP/1.1\r\nHost: x\r\n{token}"
         + "".join(f"X-H{i}: v\r\n" for i in range(5_000)) + "Connection: close\r\n\r\n",
         431, "headers_too_large"),
        (f"GET /api/v1/calls HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {'t' * 50_000}\r\n"
         "Connection: close\r\n\r\n", 431, "headers_too_large"),
    ]
    for head, expected, code in cases:
        attack = asyncio.create_task(raw_request(server, head.encode()))
        assert await healthz_seconds(server) < RESPONSIVE_SECONDS
        status, data = await attack
        assert status == expected, (head[:80], status, data[:300])
        answered = error_shape(data)["code"]
        assert answered == code if code is not None else answered not in ("unauthorized", "forbidden")
        if status in (414, 431):  # answered before the app: nothing of the request quoted back
            assert b"9999999999" not in data and b"aaaaaaaaaa" not in data and b"tttttttttt" not in data


async def test_every_4xx_is_in_the_error_shape(server: Server) -> None:
    """Each 4xx the server gives, 404s included (an unknown path inside and outside the API, an
    unknown id), and the ones aiohttp's parser answers before the app: JSON {"error": {code,
    message}}."""
    operator = (await _token(server, "operator", "101"))
    auth, bad = f"Authorization: Bearer {server.token}\r\n", "Authorization: Bearer nope\r\n"
    body = b'{"name": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    cases = [
        (f"GET /nope HTTP/1.1\r\nHost: x\r\n{auth}", b"", 404, "not_found"),
        (f"GET /api/v1/nothing-here HTTP/1.1\r\nHost: x\r\n{auth}", b"", 404, "not_found"),
        (f"GET /api/v1/calls/123456 HTTP/1.1\r\nHost: x\r\n{auth}", b"", 404, "not_found"),
        (f"GET /api/v1/clients/123456 HTTP/1.1\r\nHost: x\r\n{auth}", b"", 404, "not_found"),
        ("GET /ui/static/nothing.css HTTP/1.1\r\nHost: x\r\n", b"", 404, "not_found"),
        ("GET /api/v1/calls HTTP/1.1\r\nHost: x\r\n", b"", 401, "unauthorized"),
        (f"GET /api/v1/calls HTTP/1.1\r\nHost: x\r\n{bad}", b"", 401, "unauthorized"),
        (f"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {operator}\r\n", b"",
         403, "forbidden"),
        (f"DELETE /api/v1/calls HTTP/1.1\r\nHost: x\r\n{auth}", b"", 405, "method_not_allowed"),
        (f"GET /api/v1/events HTTP/1.1\r\nHost: x\r\n{auth}", b"", 406, "not_acceptable"),
        (f"GET /api/v1/calls?limit=-1 HTTP/1.1\r\nHost: x\r\n{auth}", b"", 422, "invalid_parameter"),
        (f"POST /api/v1/clients HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\n"
         "Content-Length: 8\r\n", b"{not js}", 400, "bad_request"),
        (f"POST /api/v1/clients HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\n"
         f"Content-Length: {len(body)}\r\n", body, 413, "payload_too_large"),
        (f"GET /{'a' * 9000} HTTP/1.1\r\nHost: x\r\n", b"", 414, "uri_too_long"),
        (f"GET / HTTP/1.1\r\nHost: x\r\nX-Big: {'b' * 9000}\r\n", b"", 431, "headers_too_large"),
        ("NOT HTTP AT ALL\r\n", b"", 400, "bad_request"),
    ]
    for head, payload, status, code in cases:
        got, data = await raw_request(server, (head + "Connection: close\r\n\r\n").encode(), payload)
        assert (got, error_shape(data)["code"]) == (status, code), (head[:60], got, data[:200])
        assert b"Content-Type: application/json" in data.split(b"\r\n\r\n", 1)[0]


async def _token(server: Server, role: str, extension: str | None = None) -> str:
    async with server.bridge.runtime.engine.begin() as conn:
        _info, token = await create_token(conn, name=f"{role}-x", role=role, extension=extension)
    return token


async def test_a_page_size_or_cursor_out_of_range_is_a_clean_4xx(server: Server) -> None:
    async with aiohttp.ClientSession() as http:
        for query in ("limit=999999999999999999999", "limit=-1", "cursor=%00%ff", "from=yesterday",
                      "cursor=" + "A" * 5000, "direction=sideways",
                      "q=a%00b"):  # NUL: PostgreSQL refuses it in text (schemathesis found a 500)
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
