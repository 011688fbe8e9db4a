"""Issue 18, points 5 and 9, through the real server: a cookie form post keeps its CSRF and Origin
checks whatever Authorization header the browser adds, and failed sign-ins from one address cannot
lock the account out for its owner at another address."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy.ext.asyncio import AsyncEngine

from pbx_bridge.auth.tokens import create_token
from pbx_bridge.config import Settings
from pbx_bridge.db.engine import make_sessionmaker
from pbx_bridge.runtime import Runtime
from pbx_bridge.server.app import make_app
from pbx_bridge.web import users as store

Client = TestClient[Any, Any]
# What a browser behind an authenticating proxy adds by itself.
PROXY_HEADERS = ({"Authorization": "Basic dXNlcjpwYXNz"},
                 {"Authorization": "Negotiate YIIGhgYGKwYBBQUCoIIGejCC"})


@pytest.fixture
async def client(
    engine: AsyncEngine, settings: Settings,
    aiohttp_client: Callable[[web.Application], Awaitable[Client]],
) -> AsyncIterator[Client]:
    async with engine.begin() as conn:
        await store.create_user(conn, username="anna", password="pass-word-1", role="manager")
    app = make_app(Runtime(settings=settings, engine=engine, sessions=make_sessionmaker(engine)))
    yield await aiohttp_client(app)


async def sign_in(client: Client) -> str:
    resp = await client.post("/ui/login", data={"username": "anna", "password": "pass-word-1"},
                             allow_redirects=False)
    assert resp.status == 302, await resp.text()
    page = await client.get("/ui/settings")
    match = re.search(r'<meta name="csrf-token" content="([^"]+)">', await page.text())
    assert match
    return match.group(1)


async def _language(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        user = await store.find_user(conn, "anna")
    assert user is not None
    return user.language


@pytest.mark.parametrize("proxy", PROXY_HEADERS)
async def test_other_authorization_headers_keep_csrf_and_origin(
    client: Client, engine: AsyncEngine, proxy: dict[str, str],
) -> None:
    token = await sign_in(client)
    evil = {**proxy, "Origin": "https://evil.example"}
    # No CSRF token, a foreign Origin: refused, nothing saved, still signed in.
    resp = await client.post("/ui/settings", data={"language": "en"}, headers=evil,
                             allow_redirects=False)
    assert resp.status == 403
    resp = await client.post("/ui/settings", data={"language": "en"}, headers=proxy,
                             allow_redirects=False)
    assert resp.status == 403
    assert await _language(engine) is None
    for headers in (evil, proxy):
        resp = await client.post("/ui/logout", headers=headers, allow_redirects=False)
        assert resp.status == 403
    # The API with the cookie and a proxy header is still a cookie request: CSRF applies.
    resp = await client.patch("/api/v1/clients/1", json={"name": "x"}, headers=evil)
    assert resp.status == 403 and (await resp.json())["error"]["code"] == "csrf_failed"
    assert (await client.get("/ui/calls", allow_redirects=False)).status == 200
    # The same form with its token from this site goes through with the header too.
    resp = await client.post("/ui/settings", data={"language": "en", "csrf_token": token},
                             headers=proxy, allow_redirects=False)
    assert resp.status == 302
    assert await _language(engine) == "en"
    resp = await client.post("/ui/logout", data={"csrf_token": token}, headers=proxy,
                             allow_redirects=False)
    assert resp.status == 302
    assert (await client.get("/ui/calls", allow_redirects=False)).status == 302  # signed out


async def test_a_bearer_header_does_not_let_a_ui_form_skip_csrf(client: Client, engine: AsyncEngine) -> None:
    await sign_in(client)
    async with engine.begin() as conn:
        _info, api_token = await create_token(conn, name="m", role="manager")
    for bearer in ("Bearer nope", f"Bearer {api_token}"):
        resp = await client.post("/ui/settings", data={"language": "en"},
                                 headers={"Authorization": bearer, "Origin": "https://evil.example"},
                                 allow_redirects=False)
        assert resp.status == 403
    assert await _language(engine) is None
    # Under /api/ a valid bearer token is token auth: no cookie, no CSRF to check.
    resp = await client.get("/api/v1/calls", headers={"Authorization": f"Bearer {api_token}"})
    assert resp.status == 200


async def _login(session: aiohttp.ClientSession, base: str, password: str) -> int:
    async with session.post(f"{base}/ui/login", data={"username": "anna", "password": password},
                            allow_redirects=False) as resp:
        return resp.status


async def test_guessing_from_one_address_does_not_lock_out_another(client: Client) -> None:
    base = str(client.make_url("")).rstrip("/")
    # Two client addresses on the loopback network: the attacker's and the owner's.
    attacker = aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=("127.0.0.3", 0)))
    owner = aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=("127.0.0.2", 0)))
    try:
        for _ in range(10):
            assert await _login(attacker, base, "wrong-guess") == 401
        # The attacker's address now waits, even with the right password...
        assert await _login(attacker, base, "pass-word-1") == 429
        # ...while the owner, elsewhere, signs in.
        assert await _login(owner, base, "pass-word-1") == 302
        # The owner's own typos count against the owner's address only.
        assert await _login(owner, base, "typo-typo") == 401
        assert await _login(owner, base, "pass-word-1") == 302
    finally:
        await attacker.close()
        await owner.close()


async def test_guessing_spread_over_addresses_hits_the_account_wide_limit(client: Client) -> None:
    base = str(client.make_url("")).rstrip("/")
    app = client.app
    assert app is not None
    from pbx_bridge.web.pages import WEB_UI

    throttle = app[WEB_UI].throttle
    throttle.wide_failures = 30  # the same rule as the default 100, in fewer requests
    sessions = [aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(f"127.0.1.{i}", 0)))
                for i in range(1, 5)]
    try:
        # 4 addresses, 9 failures each (each stays below its pair limit of 10): 36 > 30.
        for session in sessions:
            for _ in range(9):
                status = await _login(session, base, "wrong-guess")
                assert status in (401, 429)
        owner = aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=("127.0.2.1", 0)))
        try:
            assert await _login(owner, base, "pass-word-1") == 429
        finally:
            await owner.close()
    finally:
        for session in sessions:
            await session.close()
