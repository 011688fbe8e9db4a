"""The routing endpoint the dialplan calls with CURL(), over real HTTP.

Real API tokens (pbx_bridge.auth.tokens) through the real token middleware.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy.ext.asyncio import AsyncEngine

from crm_sync import cards
from crm_sync.cards import CardInput
from crm_sync.matching import MatchSettings
from pbx_bridge.auth.tokens import create_token
from pbx_bridge.config import Settings
from pbx_bridge.db.engine import make_sessionmaker
from pbx_bridge.runtime import Runtime
from pbx_bridge.server.app import make_app
from tests.crm_trace_records import replay, trace_records

# Name -> (role, extension) of the real tokens each test creates.
ROLES = {"crm-token": ("crm", None), "op-token": ("operator", "101"), "admin-token": ("admin", None)}


@pytest.fixture
async def tokens(engine: AsyncEngine) -> dict[str, str]:
    made = {}
    async with engine.begin() as conn:
        for name, (role, extension) in ROLES.items():
            _, made[name] = await create_token(conn, name=name, role=role, extension=extension)
    return made


def app_for(engine: AsyncEngine, settings: Settings) -> web.Application:
    return make_app(Runtime(settings=settings, engine=engine, sessions=make_sessionmaker(engine)))


AiohttpClient = Callable[[web.Application], Awaitable[TestClient[Any, Any]]]


async def test_routing_answers_responsible_operator(
    engine: AsyncEngine, settings: Settings, aiohttp_client: AiohttpClient, tokens: dict[str, str]
) -> None:
    async with engine.begin() as conn:
        await cards.create_card(
            conn,
            CardInput(name="Olga", phones=["8 (495) 765-43-21"], responsible="102"),
            MatchSettings(),
            datetime.now(UTC),
        )
        await cards.create_card(
            conn, CardInput(name="No manager", phones=["+79161234567"]), MatchSettings(), datetime.now(UTC)
        )
    client = await aiohttp_client(app_for(engine, settings))
    crm = {"Authorization": f"Bearer {tokens['crm-token']}"}

    async def ask(number: str, headers: dict[str, str] = crm) -> tuple[int, str, str]:
        resp = await client.get("/api/v1/routing/responsible", params={"number": number}, headers=headers)
        return resp.status, resp.content_type, await resp.text()

    # Asterisk passes ${CALLERID(num)} as the trunk presents it: with or without +, or 8...
    assert await ask("74957654321") == (200, "text/plain", "102")
    assert await ask("+74957654321") == (200, "text/plain", "102")
    assert await ask("84957654321") == (200, "text/plain", "102")
    assert await ask("+79161234567") == (200, "text/plain", "")  # card without a manager
    assert await ask("+74950000000") == (200, "text/plain", "")  # unknown caller
    assert await ask("101") == (200, "text/plain", "")  # an extension never matches
    admin = {"Authorization": f"Bearer {tokens['admin-token']}"}
    assert await ask("74957654321", admin) == (200, "text/plain", "102")

    status, ctype, body = await ask("74957654321", {})
    assert (status, ctype) == (401, "application/json") and '"unauthorized"' in body
    status, _, body = await ask("74957654321", {"Authorization": "Bearer wrong"})
    assert status == 401
    status, _, body = await ask("74957654321", {"Authorization": f"Bearer {tokens['op-token']}"})
    assert status == 403 and '"forbidden"' in body
    status, _, body = await ask("")
    assert status == 422 and "number" in body
    status, _, body = await ask("1" * 65)
    assert status == 422


@pytest.mark.parametrize("trace", ["inbound_answered", "queue_ringall_answered"])
async def test_routing_after_the_first_call_created_the_card(
    engine: AsyncEngine, settings: Settings, aiohttp_client: AiohttpClient, trace: str,
    tokens: dict[str, str],
) -> None:
    """A caller's first call makes their card with the operator who answered as the responsible
    one; on the next call the dialplan is told to ring that operator."""
    from pbx_bridge.clients.hook import CrmHook

    record = trace_records()[trace]
    await replay(engine, CrmHook(engine, settings), record)
    client = await aiohttp_client(app_for(engine, settings))
    assert record.customer_number is not None
    resp = await client.get(
        "/api/v1/routing/responsible",
        params={"number": record.customer_number.lstrip("+")},
        headers={"Authorization": f"Bearer {tokens['crm-token']}"},
    )
    assert resp.status == 200 and await resp.text() == record.operator
