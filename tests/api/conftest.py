"""The API under test: the real app on a real HTTP server, a real database (SQLite and
PostgreSQL), and a real AMI peer over TCP (bench/raw_ami.py until the simulator is merged)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.raw_ami import MiniAmiClient, RawAmiServer, Script
from pbx_bridge.ami.events import AmiEvent
from pbx_bridge.auth.tokens import create_token
from pbx_bridge.click_to_call.service import ClickToCallService
from pbx_bridge.config import PbxConfig, Settings
from pbx_bridge.db.engine import make_sessionmaker
from pbx_bridge.http.app import make_app
from pbx_bridge.recording.install import install as install_recordings
from pbx_bridge.runtime import Runtime

ROLE_TOKENS = ("admin", "manager", "operator", "crm")


@dataclass
class Api:
    client: TestClient[Any, Any]
    runtime: Runtime
    ami: RawAmiServer
    pbx: MiniAmiClient
    tokens: dict[str, str] = field(default_factory=dict)  # role (or "operator102") -> token
    token_ids: dict[str, int] = field(default_factory=dict)

    def auth(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    @property
    def c2c(self) -> ClickToCallService:
        service: ClickToCallService = self.runtime.services["click_to_call"]
        return service

    async def new_token(self, role: str, extension: str | None = None, name: str = "extra") -> str:
        async with self.runtime.engine.begin() as conn:
            info, token = await create_token(conn, name=name, role=role, extension=extension)
        self.token_ids[name] = info.id
        return token


def configure(settings: Settings, port: int = 5038) -> None:
    settings.pbx = [PbxConfig(name="main", port=port, secret="test",
                              operator_dial_string="Local/{ext}@op-phone/n",
                              outbound_context="from-internal")]
    settings.api.token_cache_seconds = 0.0  # revocation visible at once in tests


ApiFactory = Callable[..., Awaitable[Api]]


@pytest.fixture
async def make_api(settings: Settings, engine: AsyncEngine, aiohttp_client: Any) -> AsyncIterator[ApiFactory]:
    made: list[Api] = []

    async def factory(script: Script | None = None, originate_response: str = "Success",
                      connect: bool = True, **click_to_call: Any) -> Api:
        server = RawAmiServer(script=script, originate_response=originate_response)
        port = await server.start()
        configure(settings, port)
        for key, value in click_to_call.items():
            setattr(settings.click_to_call, key, value)
        runtime = Runtime(settings=settings, engine=engine, sessions=make_sessionmaker(engine))
        install_recordings(runtime)  # the recordings routes answer as under `serve`
        pbx = MiniAmiClient("main")
        runtime.pbx["main"] = pbx
        install_recordings(runtime)  # as serve does: the API serves recordings too
        app = make_app(runtime)

        async def feed(event: AmiEvent) -> None:
            await runtime.services["click_to_call"].on_event(event)

        pbx.on_event = feed
        if connect:
            await pbx.connect(port)
        client = await aiohttp_client(app)
        api = Api(client, runtime, server, pbx)
        for role in ROLE_TOKENS:
            api.tokens[role] = await api.new_token(role, "101" if role == "operator" else None, name=role)
        api.tokens["operator102"] = await api.new_token("operator", "102", name="operator102")
        made.append(api)
        return api

    yield factory
    for api in made:
        await api.c2c.close()
        await api.pbx.close()
        await api.ami.stop()


@pytest.fixture
async def api(make_api: ApiFactory) -> Api:
    return await make_api()


async def wait_for(predicate: Callable[[], Awaitable[bool]], within: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)
