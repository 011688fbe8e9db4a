"""The last call hook: publishes call changes to runtime.bus for live clients."""

from __future__ import annotations

from pbx_bridge.bus import EventBus
from pbx_bridge.calls.changes import CallChange
from pbx_bridge.events.messages import call_messages


class Notifier:
    """CallHook: call.ringing (with the CRM's card, the screen pop), answered, ended, missed."""

    def __init__(self, bus: EventBus) -> None:
        self._bus = bus

    async def on_change(self, change: CallChange) -> None:
        for message in call_messages(change):
            self._bus.publish(message)
