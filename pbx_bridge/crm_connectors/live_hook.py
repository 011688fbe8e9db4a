"""The native connector's stage for calls in progress: register / show / hide as they ring and
are answered. It runs last in the pipeline (after the live events went out), so the bridge's own
screen pop never waits for this write. Calls that end in the same batch are planned by the CRM
stage's prepare() instead, before their finish (the planner does each change once)."""

from __future__ import annotations

import asyncio

from pbx_bridge.calls.changes import CallChange
from pbx_bridge.crm_connectors.planner import OutboxPlanner


class LiveCallHook:
    def __init__(self, planner: OutboxPlanner, wake: asyncio.Event) -> None:
        self.planner = planner
        self.wake = wake

    async def on_change(self, change: CallChange) -> None:
        if await self.planner.live_change(change):
            self.wake.set()
