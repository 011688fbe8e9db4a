"""Issue 18 point 2: open live streams end within the token cache time once their credential no
longer holds: a revoked token (WebSocket and SSE, `?access_token=`), a web session signed out with
POST /ui/logout, a person whose role changed. Through the real server, with real clients, while
events keep being published: after the end, nothing more is delivered."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
import sqlalchemy as sa

from pbx_bridge.auth.tokens import revoke_token
from pbx_bridge.events.messages import make_message
from pbx_bridge.web import users as store
from pbx_bridge.web.schema import web_users
from tests.api.conftest import Api, ApiFactory

TTL = 1.0  # api.token_cache_seconds for these tests
MARGIN = 0.75  # one database round and the close handshake


@pytest.fixture
async def api(make_api: ApiFactory) -> Api:
    return await make_api(token_cache_seconds=TTL)


@contextlib.asynccontextmanager
async def publishing(api: Api) -> AsyncIterator[list[int]]:
    """Publishes a numbered event every 20 ms for as long as the block runs."""
    sent: list[int] = []

    async def run() -> None:
        while True:
            sent.append(len(sent))
            api.runtime.bus.publish(make_message("recording.ready", ["101"], call_id=len(sent) - 1,
                                                 recording={"url": "/r"}))
            await asyncio.sleep(0.02)

    task = asyncio.create_task(run())
    try:
        yield sent
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def ws_until_closed(ws: aiohttp.ClientWebSocketResponse, within: float) -> tuple[list[int], float]:
    """The event numbers received until the server closed the socket, and when it did."""
    got: list[int] = []
    async with asyncio.timeout(within):
        while True:
            msg = await ws.receive()
            if msg.type == aiohttp.WSMsgType.TEXT:
                data = json.loads(msg.data)
                if data["type"] == "recording.ready":
                    got.append(data["call_id"])
                continue
            break
    return got, time.monotonic()


async def ready(ws: aiohttp.ClientWebSocketResponse) -> None:
    msg = await asyncio.wait_for(ws.receive(), 5)
    assert json.loads(msg.data)["type"] == "ready"


async def test_revoked_token_ends_websocket_and_sse(api: Api) -> None:
    token = await api.new_token("manager", name="live-wall")
    token_id = api.token_ids["live-wall"]
    base = api.runtime.bus.subscriber_count
    ws = await api.client.ws_connect(f"/api/v1/events?access_token={token}")
    await ready(ws)
    sse = await api.client.get(f"/api/v1/events?access_token={token}",
                               headers={"Accept": "text/event-stream"})
    assert sse.status == 200
    assert b'"ready"' in await asyncio.wait_for(sse.content.readline(), 5)
    sse_events: list[int] = []

    async def read_sse() -> float:
        async for line in sse.content:
            if line.startswith(b"data: "):
                data = json.loads(line[6:])
                if data["type"] == "recording.ready":
                    sse_events.append(data["call_id"])
        return time.monotonic()

    sse_reader = asyncio.create_task(read_sse())
    async with publishing(api) as sent:
        await asyncio.sleep(0.3)
        assert sent  # the streams were delivering before the revocation
        async with api.runtime.engine.begin() as conn:
            await revoke_token(conn, token_id)
        revoked_at = time.monotonic()
        got, ws_closed_at = await ws_until_closed(ws, TTL + MARGIN + 2)
        sse_ended_at = await asyncio.wait_for(sse_reader, TTL + MARGIN + 2)
        published_after = len(sent)
        await asyncio.sleep(0.3)
        assert len(sent) > published_after  # events went on being published
    assert ws.close_code == 4401
    assert ws_closed_at - revoked_at <= TTL + MARGIN
    assert sse_ended_at - revoked_at <= TTL + MARGIN
    assert got and sse_events  # delivered while valid...
    assert max(got) < published_after and max(sse_events) < published_after  # ...never after
    assert (await ws.receive()).type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSE)
    # A new connection with the revoked token is refused.
    refused = await api.client.get(f"/api/v1/events?access_token={token}",
                                   headers={"Accept": "text/event-stream"})
    assert refused.status == 401
    await asyncio.sleep(0.1)
    assert api.runtime.bus.subscriber_count == base


async def test_a_valid_token_keeps_its_stream(api: Api) -> None:
    ws = await api.client.ws_connect("/api/v1/events", headers=api.auth("manager"))
    await ready(ws)
    async with publishing(api):
        with pytest.raises(TimeoutError):
            await ws_until_closed(ws, 3 * TTL)  # several checks pass: the stream stays open
    assert not ws.closed
    await ws.close()


async def _signed_in(api: Api, username: str, role: str, extension: str | None) -> tuple[
        aiohttp.ClientSession, str]:
    async with api.runtime.engine.begin() as conn:
        await store.create_user(conn, username=username, password="pass-word-1", role=role,
                                extension=extension)
    return await api.cookie_session(username)


async def test_cookie_websocket_ends_at_sign_out(api: Api) -> None:
    session, csrf = await _signed_in(api, "olga", "manager", None)
    try:
        ws = await session.ws_connect("/api/v1/events")
        await ready(ws)
        async with publishing(api) as sent:
            await asyncio.sleep(0.2)
            resp = await session.post("/ui/logout", data={"csrf_token": csrf}, allow_redirects=False)
            assert resp.status == 302
            signed_out_at = time.monotonic()
            got, closed_at = await ws_until_closed(ws, TTL + MARGIN + 2)
            published_after = len(sent)
            await asyncio.sleep(0.2)
        assert ws.close_code == 4401
        assert closed_at - signed_out_at <= TTL + MARGIN
        assert got and max(got) < published_after
    finally:
        await session.close()


async def test_cookie_websocket_ends_when_the_role_changes(api: Api) -> None:
    session, _csrf = await _signed_in(api, "pavel", "manager", None)
    try:
        ws = await session.ws_connect("/api/v1/events")
        await ready(ws)
        async with publishing(api):
            await asyncio.sleep(0.2)
            # Demoted to operator 102: the manager's view of everyone's calls must stop.
            async with api.runtime.engine.begin() as conn:
                await conn.execute(web_users.update().where(web_users.c.username == "pavel")
                                   .values(role="operator", extension="102"))
            changed_at = time.monotonic()
            _got, closed_at = await ws_until_closed(ws, TTL + MARGIN + 2)
        assert ws.close_code == 4401
        assert closed_at - changed_at <= TTL + MARGIN
        # The session itself still holds: a new stream opens with the new role's view.
        again = await session.ws_connect("/api/v1/events")
        await ready(again)
        await again.close()
    finally:
        await session.close()


async def test_disabled_person_stream_ends(api: Api) -> None:
    session, _csrf = await _signed_in(api, "rita", "operator", "101")
    try:
        ws = await session.ws_connect("/api/v1/events")
        await ready(ws)
        async with api.runtime.engine.begin() as conn:
            await store.set_disabled(conn, "rita")
        _got, _closed_at = await ws_until_closed(ws, TTL + MARGIN + 2)
        assert ws.close_code == 4401
        async with api.runtime.engine.connect() as conn:
            row = (await conn.execute(sa.select(web_users.c.disabled)
                                      .where(web_users.c.username == "rita"))).first()
        assert row is not None and row.disabled
    finally:
        await session.close()


