"""serve's recordings wiring, and ready recordings linked on client cards' timelines."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from pbx_bridge.config import Settings
from pbx_bridge.db.engine import make_sessionmaker
from pbx_bridge.recording.http import recording_enricher
from pbx_bridge.recording.install import install
from pbx_bridge.recording.service import RecordingService, TimelineLink
from pbx_bridge.recording.timeline import crm_timeline_listener, link_payload
from pbx_bridge.runtime import Runtime


async def test_install_registers_the_service_and_the_call_detail(settings: Settings,
                                                                 engine: AsyncEngine) -> None:
    runtime = Runtime(settings=settings, engine=engine, sessions=make_sessionmaker(engine))
    service = install(runtime)
    assert runtime.services["recordings"] is service and isinstance(service, RecordingService)
    assert recording_enricher in runtime.services["call_enrichers"]
    # Ready recordings are linked on the client's timeline.
    assert len(service._timeline) == 1
    assert os.stat(Path(settings.server.data_dir, "recording-links.key")).st_mode & 0o077 == 0


def test_link_payload() -> None:
    link = TimelineLink(7, 42, "/api/v1/calls/42/recording",
                        {"id": 3, "state": "ready", "duration_seconds": 3.84, "sha256": "x"})
    assert link_payload(link) == {"recording_id": 3, "url": "/api/v1/calls/42/recording",
                                  "state": "ready", "duration_seconds": 3.84}


async def test_ready_recording_is_linked_on_the_card(engine: AsyncEngine) -> None:
    from crm_sync import cards, contacts, matching, timeline

    now = datetime.now(UTC)
    async with engine.begin() as conn:
        card = cards.CardInput(name="Ivan Petrov", phones=["+74951234567"])
        client_id = await cards.create_card(conn, card, matching.MatchSettings(), now)
        await timeline.attach_call(conn, client_id, contacts.CallFacts(
            call_id=42, direction="inbound", status="answered", customer_number="+74951234567",
            customer_name="Ivan Petrov", did="+74951110000", operator="101", started_at=now))
    listener = crm_timeline_listener(engine)
    await listener(TimelineLink(client_id, 42, "/api/v1/calls/42/recording",
                                {"id": 1, "state": "ready", "duration_seconds": 3.84}))
    async with engine.connect() as conn:
        entries = await timeline.list_timeline(conn, client_id)
    recording = [e for e in entries if e["kind"] == "recording"]
    assert len(recording) == 1 and recording[0]["call_id"] == 42
    assert recording[0]["payload"]["url"] == "/api/v1/calls/42/recording"
    call_entry = next(e for e in entries if e["kind"] == "call")
    assert call_entry["payload"]["links"]["recording"]["url"] == "/api/v1/calls/42/recording"
