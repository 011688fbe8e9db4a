"""Reading call records for the API: filtered, cursor-paginated lists and one call's detail.

Written against pbx_bridge/db/schema.py directly (the tracker stores; this only reads).
The cursor is opaque to clients: base64 of (started_at, id) of the last row of a page, so
pages stay stable while new calls arrive.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from pbx_bridge.calls.record import SOURCES, CallRecord, Leg, Transfer, iso
from pbx_bridge.db.schema import call_legs, calls


class BadCursor(ValueError):
    pass


@dataclass
class CallFilter:
    start: datetime | None = None  # started_at >= start
    end: datetime | None = None  # started_at < end
    direction: str | None = None
    status: str | None = None  # answered | no_answer | busy | abandoned | failed | live
    missed: bool | None = None
    operator: str | None = None  # who answered or was rung
    number: str | None = None  # customer's E.164
    client_id: int | None = None
    did: str | None = None  # E.164
    source: str | None = None  # ami | cel | ami+cel
    visible_to: str | None = None  # operators: only calls their extension took part in
    extra: list[Any] = field(default_factory=list)


def _ts(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def record_from_row(row: Any, legs: list[Any] = ()) -> CallRecord:  # type: ignore[assignment]
    transfers = [
        Transfer(kind=t.get("kind", "blind"), at=_parse_at(t.get("at")), from_operator=t.get("from_operator"),
                 to_operator=t.get("to_operator"))
        for t in (row.transfers or []) if isinstance(t, dict)
    ]
    record = CallRecord(
        pbx=row.pbx, linkedid=row.linkedid, started_at=row.started_at.timestamp(),
        direction=row.direction, status=row.status, customer_number=row.customer_number,
        customer_name=row.customer_name, did=row.did, dialled=row.dialled, operator=row.operator,
        operators_rung=list(row.operators_rung or []), queue=row.queue, transfers=transfers,
        answered_at=_ts(row.answered_at), ended_at=_ts(row.ended_at),
        click_to_call_id=row.click_to_call_id, ended_during_outage=bool(row.ended_during_outage),
        id=row.id, client_id=row.client_id,
        source=row.source if row.source in SOURCES else "ami",
    )
    record.legs = [
        Leg(uniqueid=leg.uniqueid, channel=leg.channel, role=leg.role, extension=leg.extension,
            created_at=leg.created_at.timestamp(), answered_at=_ts(leg.answered_at),
            hungup_at=_ts(leg.hungup_at), hangup_cause=leg.hangup_cause)
        for leg in legs
    ]
    return record


def _parse_at(value: Any) -> float:
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            pass
    return 0.0


def leg_dict(leg: Leg) -> dict[str, Any]:
    return {"uniqueid": leg.uniqueid, "channel": leg.channel, "role": leg.role,
            "extension": leg.extension, "created_at": iso(leg.created_at),
            "answered_at": iso(leg.answered_at), "hungup_at": iso(leg.hungup_at),
            "hangup_cause": leg.hangup_cause}


def encode_cursor(started_at: datetime, call_id: int) -> str:
    raw = json.dumps([started_at.astimezone(UTC).isoformat(), call_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        ts, call_id = json.loads(raw)
        when = datetime.fromisoformat(ts)
        if when.tzinfo is None or not isinstance(call_id, int):
            raise ValueError("bad cursor")
        return when, call_id
    except (ValueError, TypeError, binascii.Error, json.JSONDecodeError, UnicodeDecodeError):
        raise BadCursor("the cursor is not one this API gave out") from None


def _took_part(extension: str) -> Any:
    """The extension answered the call, or one of its legs was that operator's phone."""
    leg = sa.select(call_legs.c.id).where(call_legs.c.call_id == calls.c.id,
                                          call_legs.c.extension == extension)
    return sa.or_(calls.c.operator == extension, leg.exists())


def _where(f: CallFilter) -> list[Any]:
    c = calls.c
    conds: list[Any] = []
    if f.start is not None:
        conds.append(c.started_at >= f.start)
    if f.end is not None:
        conds.append(c.started_at < f.end)
    if f.direction:
        conds.append(c.direction == f.direction)
    if f.status == "live":
        conds.append(c.status.is_(None))
    elif f.status:
        conds.append(c.status == f.status)
    if f.missed is not None:
        conds.append(c.missed == f.missed)
    if f.operator:
        conds.append(_took_part(f.operator))
    if f.visible_to is not None:
        conds.append(_took_part(f.visible_to))
    if f.number:
        conds.append(c.customer_number == f.number)
    if f.client_id is not None:
        conds.append(c.client_id == f.client_id)
    if f.did:
        conds.append(c.did == f.did)
    if f.source:
        conds.append(c.source == f.source)
    return conds + f.extra


async def list_calls(conn: AsyncConnection, f: CallFilter, limit: int,
                     cursor: str | None = None) -> tuple[list[CallRecord], str | None]:
    """A page of calls, newest first, and the cursor of the next page (None on the last)."""
    query = sa.select(calls).where(*_where(f))
    if cursor:
        when, last_id = decode_cursor(cursor)
        query = query.where(sa.or_(calls.c.started_at < when,
                                   sa.and_(calls.c.started_at == when, calls.c.id < last_id)))
    query = query.order_by(calls.c.started_at.desc(), calls.c.id.desc()).limit(limit + 1)
    rows = (await conn.execute(query)).all()
    page = rows[:limit]
    next_cursor = encode_cursor(page[-1].started_at, page[-1].id) if len(rows) > limit else None
    return [record_from_row(r) for r in page], next_cursor


async def get_call(conn: AsyncConnection, call_id: int) -> CallRecord | None:
    row = (await conn.execute(sa.select(calls).where(calls.c.id == call_id))).first()
    if row is None:
        return None
    legs = (await conn.execute(
        sa.select(call_legs).where(call_legs.c.call_id == call_id).order_by(call_legs.c.created_at,
                                                                            call_legs.c.id)
    )).all()
    return record_from_row(row, list(legs))


def took_part(record: CallRecord, extension: str) -> bool:
    return record.operator == extension or extension in record.operators_rung or any(
        leg.extension == extension for leg in record.legs)
