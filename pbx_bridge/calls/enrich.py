"""Extension point for the call detail: features add their part (client, recording, transcript).

An enricher is `async (conn, record, detail) -> dict` returning keys to merge into the detail
of GET /api/v1/calls/{id}. Register with `add_enricher(runtime.services, fn)`; the detail
starts with `client`, `recording` and `transcript` set to null so the shape never varies.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from pbx_bridge.calls.record import CallRecord

Enricher = Callable[[AsyncConnection, CallRecord, dict[str, Any]], Awaitable[dict[str, Any]]]
SERVICE_KEY = "call_enrichers"
PLACEHOLDERS = ("client", "recording", "transcript")


def add_enricher(services: MutableMapping[str, Any], enricher: Enricher) -> None:
    services.setdefault(SERVICE_KEY, []).append(enricher)


def enrichers(services: MutableMapping[str, Any]) -> list[Enricher]:
    found: list[Enricher] = services.get(SERVICE_KEY, [])
    return found
