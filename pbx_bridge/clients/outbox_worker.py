"""The background task that delivers the outbox to the external CRM (started by serve)."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import aiohttp
from sqlalchemy.ext.asyncio import AsyncEngine

from crm_sync.connector import HttpConnector
from crm_sync.outbox import run_delivery_loop
from pbx_bridge.config import Settings
from pbx_bridge.crm_connectors.options import connector_settings, retry_policy
from pbx_bridge.log import event

log = logging.getLogger("pbx_bridge.clients.outbox_worker")


class OutboxWorker:
    """Owns the HTTP session and the delivery loop; `wake` is set by whoever enqueues."""

    def __init__(self, engine: AsyncEngine, settings: Settings, wake: asyncio.Event | None = None) -> None:
        self.engine = engine
        self.settings = settings
        self.wake = wake or asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.session: aiohttp.ClientSession | None = None
        self.connector: HttpConnector | None = None

    async def start(self) -> None:
        self.session = aiohttp.ClientSession()
        self.connector = HttpConnector(connector_settings(self.settings), self.session)
        self._stop.clear()
        self._task = asyncio.create_task(
            run_delivery_loop(
                self.engine,
                self.connector.send,
                retry_policy(self.settings),
                self._stop,
                poll_interval=self.settings.crm.outbox_poll_interval,
                wake=self.wake,
                keep_delivered=timedelta(days=keep) if (keep := self.settings.crm.outbox_keep_days) else None,
            ),
            name="crm-outbox",
        )
        event(log, logging.INFO, "crm.outbox_started")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, self.settings.crm.external_timeout + 5)
            except TimeoutError:
                self._task.cancel()
            self._task = None
        if self.session is not None:
            await self.session.close()
            self.session = None
