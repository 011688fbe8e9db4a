"""A native CRM connector inside `serve`: its client, the outbox delivery loop, its upkeep
(Bitrix24: users by extension, external lines for the DIDs, the OnExternalCallStart binding),
and what /readyz, /metrics and the event handlers need. Published as
runtime.services["crm_connector"]."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import sqlalchemy as sa

from crm_sync import outbox
from crm_sync.bitrix24 import commands as b24_commands
from crm_sync.bitrix24 import items as b24_items
from crm_sync.bitrix24.api import MAX_BATCH, Bitrix24Client, Bitrix24Error, Bitrix24Settings
from crm_sync.bitrix24.directory import UserDirectory
from crm_sync.bitrix24.sender import Bitrix24Sender
from crm_sync.connector_state import ConnectorState
from crm_sync.kommo import items as kommo_items
from crm_sync.kommo.api import KommoClient, KommoSettings
from crm_sync.kommo.sender import KommoSender
from crm_sync.outbox import CrmCircuit
from crm_sync.phones import normalize
from pbx_bridge.config import Settings
from pbx_bridge.crm_connectors.media import StoredCallMedia
from pbx_bridge.crm_connectors.options import contact_policy, retry_policy
from pbx_bridge.crm_connectors.planner import Bitrix24Planner, KommoPlanner, OutboxPlanner
from pbx_bridge.db.schema import calls
from pbx_bridge.log import event
from pbx_bridge.runtime import Runtime

log = logging.getLogger("pbx_bridge.crm_connectors")
SERVICE_NAME = "crm_connector"
HANDLER_PATH = "/hooks/bitrix24"
SETUP_RETRY_SECONDS = 60.0
ROUND_LIMIT = MAX_BATCH * 10  # items per delivery round (Bitrix24: up to 10 batches)


def active_connector(settings: Settings) -> str | None:
    crm = settings.crm
    if crm.bitrix24.enabled:
        return "bitrix24"
    if crm.kommo.enabled:
        return "kommo"
    return None


def bitrix24_settings(settings: Settings) -> Bitrix24Settings:
    b = settings.crm.bitrix24
    return Bitrix24Settings(portal_url=b.portal_url, webhook_url=b.webhook_url, client_id=b.client_id,
                            client_secret=b.client_secret, refresh_token=b.refresh_token,
                            application_token=b.application_token, oauth_url=b.oauth_url,
                            requests_per_second=b.requests_per_second, burst=b.burst, timeout=b.timeout)


def kommo_settings(settings: Settings) -> KommoSettings:
    k = settings.crm.kommo
    return KommoSettings(base_url=k.base_url, client_id=k.client_id, client_secret=k.client_secret,
                         redirect_uri=k.redirect_uri, authorization_code=k.authorization_code,
                         refresh_token=k.refresh_token, long_lived_token=k.long_lived_token,
                         requests_per_second=k.requests_per_second, timeout=k.timeout)


def handler_url(settings: Settings) -> str | None:
    b = settings.crm.bitrix24
    if b.handler_url:
        return b.handler_url
    base = settings.server.public_url.rstrip("/")
    return base + HANDLER_PATH if base else None


def did_lines(settings: Settings) -> dict[str, str]:
    """Line NUMBER (the DID's digits) -> name (its ad channel), for every DID in did_sources."""
    region = settings.phone.default_region
    normalized = {}
    for did, name in settings.crm.did_sources.items():
        e164 = normalize(did, region) or did
        normalized[e164] = name
    return b24_commands.external_lines(normalized)


class ConnectorService:
    def __init__(self, runtime: Runtime, name: str) -> None:
        self.runtime = runtime
        self.name = name
        settings = runtime.settings
        self.wake = asyncio.Event()
        self.circuit = CrmCircuit(retry_policy(settings))
        self.session: aiohttp.ClientSession | None = None
        self.bitrix24: Bitrix24Client | None = None
        self.directory: UserDirectory | None = None
        self.b24_sender: Bitrix24Sender | None = None
        self.kommo: KommoClient | None = None
        self.kommo_sender: KommoSender | None = None
        policy = contact_policy(settings)
        self.planner: OutboxPlanner
        if name == "bitrix24":
            b = settings.crm.bitrix24
            self.planner = Bitrix24Planner(runtime.engine, policy, show_card=b.show_card,
                                           attach_wait=timedelta(minutes=b.attach_wait_minutes),
                                           outbound_line=b.outbound_line,
                                           # Transcripts come from this process's workers.
                                           transcripts=settings.transcription.in_process)
        else:
            self.planner = KommoPlanner(policy, attach_wait=timedelta(
                minutes=settings.crm.kommo.attach_wait_minutes))
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.setup_done = False

    @property
    def state(self) -> ConnectorState:
        client = self.bitrix24 or self.kommo
        assert client is not None, "start() first"
        return client.state

    def _media(self) -> StoredCallMedia:
        settings = self.runtime.settings
        link_seconds = settings.crm.kommo.link_days * 86400
        return StoredCallMedia(self.runtime.engine, self.runtime.services.get("recordings"),
                               public_url=settings.server.public_url, link_seconds=link_seconds)

    async def start(self) -> None:
        settings = self.runtime.settings
        engine = self.runtime.engine
        self.session = aiohttp.ClientSession()
        send: outbox.Send | None = None
        send_many: outbox.SendMany | None = None
        if self.name == "bitrix24":
            b = settings.crm.bitrix24
            self.bitrix24 = Bitrix24Client(bitrix24_settings(settings), self.session, engine)
            self.directory = UserDirectory(self.bitrix24, b.default_user_id)
            self.b24_sender = Bitrix24Sender(self.bitrix24, self.directory, self._media(),
                                             show_max_age=b.show_max_age_seconds)
            send_many = self.b24_sender.send_many
            # The users, lines and binding first: the first deliveries then name the right users.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.setup(), b.timeout * 3)
        else:
            k = settings.crm.kommo
            self.kommo = KommoClient(kommo_settings(settings), self.session, engine)
            self.kommo_sender = KommoSender(self.kommo, k.users, self._media(), source=k.source,
                                            service_code=k.service_code,
                                            pipeline_id=k.pipeline_id or None)
            self.planner.lookup = self.kommo_sender.lookup
            send = self.kommo_sender.send
        crm = settings.crm
        self._tasks.append(asyncio.create_task(outbox.run_delivery_loop(
            engine, send, retry_policy(settings), self._stop, poll_interval=crm.outbox_poll_interval,
            wake=self.wake, send_many=send_many, limit=ROUND_LIMIT, circuit=self.circuit,
            keep_delivered=timedelta(days=crm.outbox_keep_days) if crm.outbox_keep_days else None,
        ), name=f"crm-{self.name}"))
        self._tasks.append(asyncio.create_task(self._upkeep(), name=f"crm-{self.name}-upkeep"))
        self._tasks.append(asyncio.create_task(self._follow_media(), name=f"crm-{self.name}-media"))
        event(log, logging.INFO, "crm.connector_started", connector=self.name)

    async def setup(self) -> bool:
        """Bitrix24: users by extension, a line per DID, OnExternalCallStart bound. True when done
        (retried by the upkeep task until it is)."""
        if self.bitrix24 is None or self.directory is None:
            return True
        b = self.runtime.settings.crm.bitrix24
        try:
            await self.directory.refresh()
            if self.bitrix24.settings.mode == "application":
                await self._ensure_lines()
                url = handler_url(self.runtime.settings)
                if b.click_to_call and url:
                    await self._bind(url)
                elif b.click_to_call:
                    event(log, logging.WARNING, "crm.bitrix24.not_bound",
                          reason="set server.public_url or crm.bitrix24.handler_url")
        except (outbox.DeliveryError, Bitrix24Error) as exc:
            event(log, logging.WARNING, "crm.bitrix24.setup_failed", error=str(exc)[:300])
            return False
        self.setup_done = True
        return True

    async def _ensure_lines(self) -> None:
        assert self.bitrix24 is not None
        wanted = did_lines(self.runtime.settings)
        if not wanted:
            return
        existing = await self.bitrix24.call(b24_commands.LINE_GET, {}) or []
        have = {str(line.get("NUMBER")) for line in existing if isinstance(line, dict)}
        for number, name in wanted.items():
            if number not in have:
                await self.bitrix24.call(b24_commands.LINE_ADD, {"NUMBER": number, "NAME": name})
                event(log, logging.INFO, "crm.bitrix24.line_added", number=number, line_name=name)

    async def _bind(self, url: str) -> None:
        assert self.bitrix24 is not None
        try:
            await self.bitrix24.call("event.bind", {"event": "OnExternalCallStart", "handler": url})
        except Bitrix24Error as exc:
            if exc.code != "ERROR_HANDLER_ALREADY_EXIST":
                raise
        event(log, logging.INFO, "crm.bitrix24.bound", event_name="OnExternalCallStart")

    async def _upkeep(self) -> None:
        settings = self.runtime.settings
        refresh = settings.crm.bitrix24.users_refresh_minutes * 60
        last_users = asyncio.get_running_loop().time()
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), SETUP_RETRY_SECONDS if not self.setup_done
                                       else min(refresh, SETUP_RETRY_SECONDS))
            if self._stop.is_set() or self.bitrix24 is None or self.bitrix24.state.stopped:
                continue
            try:
                if not self.setup_done:
                    await self.setup()
                elif asyncio.get_running_loop().time() - last_users >= refresh and self.directory:
                    await self.directory.refresh()
                    last_users = asyncio.get_running_loop().time()
            except (outbox.DeliveryError, Bitrix24Error) as exc:
                event(log, logging.WARNING, "crm.upkeep_failed", connector=self.name, error=str(exc)[:300])

    async def _follow_media(self) -> None:
        """A recording or transcript just became ready: its call's waiting item is due now."""
        bus = self.runtime.bus
        wanted = ("recording.ready", "transcript.ready")
        subscription = bus.subscribe(lambda m: m.get("type") in wanted)
        while not self._stop.is_set():
            message = await subscription.get()
            if message is None:
                subscription = bus.subscribe(lambda m: m.get("type") in wanted)
                continue
            call_id = message.get("call_id")
            if not isinstance(call_id, int):
                continue
            try:
                await self._nudge(call_id)
            except (OSError, sa.exc.SQLAlchemyError) as exc:
                event(log, logging.WARNING, "crm.nudge_failed", call_id=call_id, error=str(exc)[:200])

    async def _nudge(self, call_id: int) -> None:
        engine = self.runtime.engine
        if self.name == "bitrix24":
            key = b24_items.client_key(call_id)
        else:
            async with engine.connect() as conn:
                number = (await conn.execute(sa.select(calls.c.customer_number)
                                             .where(calls.c.id == call_id))).scalar()
            key = kommo_items.client_key(number, number, call_id)
        async with engine.begin() as conn:
            moved = await outbox.nudge(conn, key, datetime.now(UTC))
        if moved:
            self.wake.set()

    async def install(self, auth: dict[str, Any]) -> None:
        """Bitrix24's ONAPPINSTALL: keep the tokens, then bind and deliver what waited."""
        assert self.bitrix24 is not None
        await self.bitrix24.accept_install(auth)
        self.circuit.reset()
        self.setup_done = False
        await self.setup()
        self.wake.set()

    async def observe(self) -> dict[str, Any]:
        """State and backlog for /readyz and /metrics."""
        async with self.runtime.engine.connect() as conn:
            counted = await outbox.counts(conn)
        state = self.state
        return {**state.to_dict(), "backlog": counted["pending"], "dead_letters": counted["dead"]}

    async def stop(self) -> None:
        self._stop.set()
        delivery = self._tasks[0] if self._tasks else None
        others = self._tasks[1:]
        if delivery is not None:
            # The round under way finishes (marking what was sent), then the loop ends.
            try:
                grace = self.runtime.settings.crm.outbox_poll_interval + 30.0
                await asyncio.wait_for(asyncio.shield(delivery), grace)
            except TimeoutError:
                delivery.cancel()
        for task in others:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self.session is not None:
            await self.session.close()
            self.session = None
