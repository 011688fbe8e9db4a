"""Call rows written straight into the core tables, as the call tracker stores them."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from pbx_bridge.db.schema import call_legs, calls

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
_ids = itertools.count(1)


async def insert_call(conn: AsyncConnection, *, minutes: float = 0, legs: list[dict[str, Any]] | None = None,
                      **fields: Any) -> int:
    started = T0 + timedelta(minutes=minutes)
    status = fields.get("status", "answered")
    wait = fields.pop("wait", 5.0)
    talk = fields.pop("talk", 60.0 if status == "answered" else 0.0)
    answered_at = started + timedelta(seconds=wait) if status == "answered" else None
    ended_at = None if status is None else started + timedelta(seconds=wait + talk)
    direction = fields.get("direction", "inbound")
    values: dict[str, Any] = {
        "pbx": "main", "linkedid": f"lnk-{next(_ids)}", "state": "live" if status is None else "ended",
        "direction": direction, "status": status,
        "missed": direction == "inbound" and status not in (None, "answered"),
        "customer_number": "+79161234567", "customer_name": None, "did": "+74951110000",
        "dialled": None, "operator": "101" if status == "answered" else None,
        "operators_rung": ["101"], "queue": None, "transfers": [], "started_at": started,
        "answered_at": answered_at, "ended_at": ended_at,
        "wait_seconds": None if status is None else wait,
        "talk_seconds": None if status is None else (talk if status == "answered" else 0.0),
        "click_to_call_id": None, "client_id": None, "tags": [], "updated_at": started,
    }
    values.update(fields)
    result = await conn.execute(calls.insert().values(**values))
    call_id = int(result.inserted_primary_key[0])  # type: ignore[index]
    for i, leg in enumerate(legs or []):
        await conn.execute(call_legs.insert().values(
            call_id=call_id, uniqueid=f"{values['linkedid']}.{i}", channel=leg.get("channel", "PJSIP/x"),
            role=leg.get("role", "operator"), extension=leg.get("extension"),
            created_at=started, answered_at=None, hungup_at=ended_at, hangup_cause="16"))
    return call_id
