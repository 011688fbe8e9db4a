"""Linking ready recordings on client cards' timelines (crm_sync's timeline).

`crm_timeline_listener(engine)` returns the callback for RecordingService.add_timeline_listener.
crm_sync finds every card the call is attached to by the call id, so the link lands on each of
them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from crm_sync.timeline import add_timeline_link
from pbx_bridge.recording.service import TimelineCallback, TimelineLink


def link_payload(link: TimelineLink) -> dict[str, Any]:
    rec = link.recording
    return {"recording_id": rec.get("id"), "url": link.url, "state": rec.get("state"),
            "duration_seconds": rec.get("duration_seconds")}


def crm_timeline_listener(engine: AsyncEngine) -> TimelineCallback:
    async def on_ready(link: TimelineLink) -> None:
        async with engine.begin() as conn:
            await add_timeline_link(conn, link.call_id, "recording", link_payload(link), datetime.now(UTC))

    return on_ready
