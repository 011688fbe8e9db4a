"""Starts what client cards need in `serve`: the call hook and, with an external CRM, the outbox
worker. The hook is published as runtime.services["crm_hook"] for the call pipeline."""

from __future__ import annotations

from pbx_bridge.clients.hook import CrmHook
from pbx_bridge.clients.outbox_worker import OutboxWorker
from pbx_bridge.runtime import Runtime


class CrmServices:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.worker: OutboxWorker | None = None
        self.hook: CrmHook | None = None

    async def start(self) -> None:
        settings = self.runtime.settings
        if settings.crm.external_enabled:
            self.worker = OutboxWorker(self.runtime.engine, settings)
            await self.worker.start()
        self.hook = CrmHook(
            self.runtime.engine,
            settings,
            bus=self.runtime.bus,
            connector=self.worker.connector if self.worker else None,
            outbox_wake=self.worker.wake if self.worker else None,
        )
        self.runtime.services["crm_hook"] = self.hook
        if self.worker is not None:
            self.runtime.services["crm_outbox"] = self.worker

    async def stop(self) -> None:
        if self.hook is not None:
            self.hook.close()
        if self.worker is not None:
            await self.worker.stop()
