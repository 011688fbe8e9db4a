"""The last call hook: publishes call changes to runtime.bus for live clients."""

from __future__ import annotations

from collections.abc import Mapping

from crm_sync.contacts import source_for_did
from pbx_bridge.bus import EventBus
from pbx_bridge.calls.changes import CallChange
from pbx_bridge.events.messages import call_messages

# DIDs whose ad channel was looked up (a handful per installation; normalizing costs ~20 µs).
_MAX_DIDS = 10_000


class Notifier:
    """CallHook: call.ringing (the screen pop, with the CRM's card and the DID's ad channel),
    call.updated, answered, ended, missed."""

    def __init__(self, bus: EventBus, did_sources: Mapping[str, str] | None = None,
                 region: str = "RU") -> None:
        self._bus = bus
        self._sources = dict(did_sources or {})
        self._region = region
        self._channels: dict[str, str | None] = {}

    def ad_channel(self, did: str | None) -> str | None:
        if not did or not self._sources:
            return None
        if did not in self._channels:
            if len(self._channels) > _MAX_DIDS:
                self._channels.clear()
            self._channels[did] = source_for_did(did, self._sources, self._region)
        return self._channels[did]

    async def on_change(self, change: CallChange) -> None:
        channel = self.ad_channel(change.record.did) if change.kind == "ringing" else None
        for message in call_messages(change, channel):
            self._bus.publish(message)
