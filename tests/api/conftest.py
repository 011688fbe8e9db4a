"""The API under test as `serve` runs it: the bridge assembled by pbx_bridge.assembly (its HTTP
server on a real port, PbxConnection, the call pipeline, click-to-call, recordings, the notifier),
a real database (SQLite and PostgreSQL), and the project's simulated Asterisk over TCP, which
plays the real click_to_call trace for each Originate (or its no-answer and busy outcomes)."""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from pbx_bridge.ami.connection import PbxConnection
from pbx_bridge.assembly import Bridge, assemble
from pbx_bridge.auth.tokens import create_token
from pbx_bridge.click_to_call.service import ClickToCallService
from pbx_bridge.config import PbxConfig, Settings
from pbx_bridge.runtime import Runtime
from pbx_bridge.simulator.server import AmiSimulator, OriginateOutcome, SimulatorSettings
from tests.e2e_support import free_port
from tests.recording_rig import OPERATORS

ROLE_TOKENS = ("admin", "manager", "operator", "crm")
SECRET = "test"


class Client:
    """An HTTP client on the bridge's real port, with the shape the tests use (paths relative to
    the server; `app` and `server` of the running app)."""

    def __init__(self, port: int, app: web.Application) -> None:
        self.session = aiohttp.ClientSession(base_url=f"http://127.0.0.1:{port}")
        self.app = app
        self.server = SimpleNamespace(host="127.0.0.1", port=port)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.session.request(method, path, **kwargs)

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.session.get(path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.session.post(path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> Any:
        return self.session.patch(path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Any:
        return self.session.delete(path, **kwargs)

    def ws_connect(self, path: str, **kwargs: Any) -> Any:
        return self.session.ws_connect(path, **kwargs)


@dataclass
class Api:
    client: Client
    bridge: Bridge
    sim: AmiSimulator
    tokens: dict[str, str] = field(default_factory=dict)  # role (or "operator102") -> token
    token_ids: dict[str, int] = field(default_factory=dict)

    @property
    def runtime(self) -> Runtime:
        return self.bridge.runtime

    @property
    def connection(self) -> PbxConnection:
        return self.bridge.connections[0]

    @property
    def port(self) -> int:
        return self.bridge.http_port

    def auth(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    @property
    def c2c(self) -> ClickToCallService:
        service: ClickToCallService = self.runtime.services["click_to_call"]
        return service

    def originates(self) -> list[dict[str, Any]]:
        """The Originates the simulated Asterisk read off the socket (Variable: a list)."""
        out = []
        for action in self.sim.actions:
            if action.name != "Originate":
                continue
            fields: dict[str, Any] = {}
            for key, value in action.headers:
                if key == "Variable":
                    fields.setdefault("Variable", []).append(value)
                else:
                    fields[key] = value
            out.append(fields)
        return out

    async def cookie_session(self, username: str,
                             password: str = "pass-word-1") -> tuple[aiohttp.ClientSession, str]:
        """A browser-like client signed in as `username` through /ui/login, and the session's CSRF
        token (from the page's meta tag). The caller closes the session."""
        session = aiohttp.ClientSession(base_url=f"http://127.0.0.1:{self.port}",
                                        cookie_jar=aiohttp.CookieJar(unsafe=True))
        resp = await session.post("/ui/login", data={"username": username, "password": password},
                                  allow_redirects=False)
        assert resp.status == 302, await resp.text()
        page = await session.get("/ui/settings")
        match = re.search(r'<meta name="csrf-token" content="([^"]+)">', await page.text())
        assert match
        return session, match.group(1)

    async def new_token(self, role: str, extension: str | None = None, name: str = "extra") -> str:
        async with self.runtime.engine.begin() as conn:
            info, token = await create_token(conn, name=name, role=role, extension=extension)
        self.token_ids[name] = info.id
        return token


def configure(settings: Settings, port: int) -> None:
    settings.server.port = 0
    # Calls are recorded into the simulated Asterisk's spool, seen by the bridge at the same path.
    settings.recordings.spool_dir = str(settings.data_path / "asterisk" / "monitor")
    settings.pbx = [PbxConfig(name="main", port=port, secret=SECRET, operator_channel=OPERATORS,
                              inbound_contexts=["from-trunk"], operator_dial_string="Local/{ext}@op-phone/n",
                              outbound_context="from-internal", ping_interval=1.0, ping_timeout=2.0,
                              reconnect_min=0.05, reconnect_max=0.3)]
    settings.api.token_cache_seconds = 0.0  # revocation visible at once in tests
    settings.transcription.in_process = False  # no model loaded for API tests


ApiFactory = Callable[..., Awaitable[Api]]


@pytest.fixture
async def make_api(settings: Settings, engine: AsyncEngine) -> AsyncIterator[ApiFactory]:
    made: list[tuple[Api, bool]] = []

    async def factory(outcome: OriginateOutcome = "answer", pbx_up: bool = True, speed: float = 10.0,
                      unknown_extensions: frozenset[str] = frozenset(),
                      token_cache_seconds: float = 0.0, **click_to_call: Any) -> Api:
        sim = AmiSimulator(SimulatorSettings(secret=SECRET, speed=speed, seed=7, auth_fail_delay=0.05,
                                             originate_outcome=outcome,
                                             unknown_extensions=unknown_extensions,
                                             spool_dir=settings.data_path / "asterisk"))
        if pbx_up:
            await sim.start()
        configure(settings, sim.port if pbx_up else free_port())
        settings.api.token_cache_seconds = token_cache_seconds
        for key, value in click_to_call.items():
            setattr(settings.click_to_call, key, value)
        bridge = assemble(dataclasses.replace(settings, pbx=list(settings.pbx)), engine)
        await bridge.start()
        assert bridge.runner is not None
        api = Api(Client(bridge.http_port, bridge.runner.app), bridge, sim)
        made.append((api, pbx_up))
        if pbx_up:
            await wait_until(lambda: api.connection.connected)
        for role in ROLE_TOKENS:
            api.tokens[role] = await api.new_token(role, "101" if role == "operator" else None, name=role)
        api.tokens["operator102"] = await api.new_token("operator", "102", name="operator102")
        return api

    yield factory
    for api, pbx_up in made:
        await api.client.session.close()
        await api.bridge.stop()  # (again, when a test stopped it: a no-op)
        if pbx_up:
            await api.sim.stop()


@pytest.fixture
async def api(make_api: ApiFactory) -> Api:
    return await make_api()


async def wait_until(predicate: Callable[[], bool], within: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


async def wait_for(predicate: Callable[[], Awaitable[bool]], within: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)
