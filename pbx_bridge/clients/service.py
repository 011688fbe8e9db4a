"""Starts what client cards need in `serve`: the call hook and, with an external CRM, the outbox
worker. The hook is published as runtime.services["crm_hook"] for the call pipeline. At start,
the CRM work an earlier process left undone (it died between saving an ended call and its CRM
work) is done in the background."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime

import sqlalchemy as sa

from pbx_bridge.calls.changes import CallHook
from pbx_bridge.clients.hook import CrmHook
from pbx_bridge.clients.outbox_worker import OutboxWorker
from pbx_bridge.crm_connectors.live_hook import LiveCallHook
from pbx_bridge.crm_connectors.service import SERVICE_NAME, ConnectorService, active_connector
from pbx_bridge.log import event
from pbx_bridge.runtime import Runtime

log = logging.getLogger("pbx_bridge.clients.service")
RECONCILE_RETRY_SECONDS = 5.0


class CrmServices:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.worker: OutboxWorker | None = None
        self.connector: ConnectorService | None = None
        # Pipeline stages to run after the live events (the native connector's live calls).
        self.late_hooks: list[CallHook] = []
        self.hook: CrmHook | None = None
        self._reconcile: asyncio.Task[None] | None = None

    async def start(self) -> None:
        settings = self.runtime.settings
        if settings.crm.external_enabled:
            self.worker = OutboxWorker(self.runtime.engine, settings)
            await self.worker.start()
        elif (native := active_connector(settings)) is not None:
            self.connector = ConnectorService(self.runtime, native)
            self.runtime.services[SERVICE_NAME] = self.connector
            await self.connector.start()
            self.late_hooks.append(LiveCallHook(self.connector.planner, self.connector.wake))
        wake = self.worker.wake if self.worker else (self.connector.wake if self.connector else None)
        self.hook = CrmHook(
            self.runtime.engine,
            settings,
            bus=self.runtime.bus,
            connector=self.worker.connector if self.worker else None,
            outbox_wake=wake,
            planner=self.connector.planner if self.connector else None,
        )
        self.runtime.services["crm_hook"] = self.hook
        if self.worker is not None:
            self.runtime.services["crm_outbox"] = self.worker
        self._reconcile = asyncio.create_task(self._reconcile_left_over(self.hook, datetime.now(UTC)),
                                              name="crm-reconcile")

    async def _reconcile_left_over(self, hook: CrmHook, started: datetime) -> None:
        while True:
            try:
                await hook.reconcile(started)
                return
            except (OSError, sa.exc.SQLAlchemyError) as exc:
                event(log, logging.WARNING, "crm.reconcile_failed", error=str(exc)[:300],
                      retry_in=RECONCILE_RETRY_SECONDS)
                await asyncio.sleep(RECONCILE_RETRY_SECONDS)

    async def stop(self) -> None:
        if self._reconcile is not None:
            self._reconcile.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconcile
        if self.hook is not None:
            self.hook.close()
        if self.worker is not None:
            await self.worker.stop()
        if self.connector is not None:
            await self.connector.stop()
            # A standby that acts again later starts a new one (pbx_bridge.assembly.activate).
            self.runtime.services.pop(SERVICE_NAME, None)
            self.connector = None
            self.late_hooks.clear()
