"""Rows for the web UI tests: calls inserted straight into the calls table, people created."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from pbx_bridge.calls.record import iso
from pbx_bridge.db.schema import call_legs, calls


async def insert_call(conn: AsyncConnection, **fields: Any) -> dict[str, Any]:
    """One call row; returns it as the API's record shape (CallRecord.to_dict keys)."""
    started = fields.pop("started_at", datetime(2026, 11, 20, 10, 0, tzinfo=UTC))
    status = fields.pop("status", "answered")
    wait = fields.pop("wait_seconds", 5.0)
    talk = fields.pop("talk_seconds", 60.0 if status == "answered" else 0.0)
    live = fields.pop("live", False)
    answered_at = started + timedelta(seconds=wait) if status == "answered" else None
    ended_at = None if live else started + timedelta(seconds=wait + (talk or 0))
    direction = fields.pop("direction", "inbound")
    row: dict[str, Any] = {
        "pbx": "main", "linkedid": fields.pop("linkedid", f"lk-{uuid.uuid4().hex}"),
        "state": "live" if live else "ended", "direction": direction,
        "status": None if live else status,
        "missed": (not live) and direction == "inbound" and status != "answered",
        "customer_number": fields.pop("customer_number", "+79161234567"),
        "customer_name": fields.pop("customer_name", None), "did": fields.pop("did", "+74951110000"),
        "dialled": fields.pop("dialled", None),
        "operator": fields.pop("operator", "101" if status == "answered" else None),
        "operators_rung": fields.pop("operators_rung", ["101"]), "queue": None, "transfers": [],
        "started_at": started, "answered_at": answered_at, "ended_at": ended_at,
        "wait_seconds": None if live else wait, "talk_seconds": None if live else talk,
        "click_to_call_id": None, "client_id": fields.pop("client_id", None), "tags": [],
        "updated_at": datetime.now(UTC),
    }
    row.update(fields)
    result = await conn.execute(calls.insert().values(**row).returning(calls.c.id))
    call_id = result.scalar_one()
    # Legs as the tracker writes them: the customer's, and one per operator phone rung.
    await conn.execute(call_legs.insert(), [
        {"call_id": call_id, "uniqueid": f"{call_id}.0", "channel": "PJSIP/trunk-0001",
         "role": "customer", "extension": None, "created_at": started},
        *({"call_id": call_id, "uniqueid": f"{call_id}.{i + 1}", "channel": f"PJSIP/{ext}-000{i}",
           "role": "operator", "extension": ext, "created_at": started,
           "answered_at": answered_at if ext == row["operator"] else None}
          for i, ext in enumerate(row["operators_rung"]))])
    record = {k: row[k] for k in ("pbx", "linkedid", "direction", "status", "missed", "customer_number",
                                  "customer_name", "did", "dialled", "operator", "operators_rung",
                                  "queue", "transfers", "wait_seconds", "talk_seconds",
                                  "click_to_call_id", "client_id")}
    record.update(id=call_id, started_at=iso(started), answered_at=iso(answered_at),
                  ended_at=iso(ended_at))
    return record
