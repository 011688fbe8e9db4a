"""Reading call records for the API: filtered, cursor-paginated lists and one call's detail.

Written against pbx_bridge/db/schema.py directly (the tracker stores; this only reads).
The cursor is opaque to clients: base64 of (started_at, id) of the last row of a page, so
pages stay stable while new calls arrive; for another sort order (`sort`), of the order and the
last row's (value, id), so a cursor only continues the order it was made in.
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

from crm_sync.phone_search import ids_containing
from pbx_bridge.calls.record import SOURCES, CallRecord, Leg, Transfer, iso
from pbx_bridge.db.schema import call_legs, calls


class BadCursor(ValueError):
    pass


# The orders the journal can be read in: each has an index on (column, id) (pbx_bridge/db/schema.py),
# so a page is an index range whatever the order. Calls without a value (a call not answered has no
# talk time) count as the smallest: last when descending, first when ascending.
SORT_FIELDS = ("started_at", "wait_seconds", "talk_seconds")
DEFAULT_SORT = "-started_at"


@dataclass(frozen=True)
class Sort:
    field: str = "started_at"
    descending: bool = True

    @classmethod
    def parse(cls, text: str) -> Sort:
        """`started_at` (ascending) or `-started_at` (descending); ValueError for anything else."""
        name = text[1:] if text.startswith("-") else text
        if name not in SORT_FIELDS:
            raise ValueError(f"'sort' must be one of {', '.join(SORT_FIELDS)}, optionally after '-' "
                             f"(descending), got {text[:40]!r}")
        return cls(name, text.startswith("-"))

    @property
    def text(self) -> str:
        return ("-" if self.descending else "") + self.field

    @property
    def is_default(self) -> bool:
        return self.text == DEFAULT_SORT

    def order_by(self) -> list[Any]:
        column, key = calls.c[self.field], calls.c.id
        if not column.nullable:
            return [column.desc(), key.desc()] if self.descending else [column.asc(), key.asc()]
        if self.descending:
            return [column.desc().nulls_last(), key.desc()]
        return [column.asc().nulls_first(), key.asc()]

    def after(self, value: Any, last_id: int) -> Any:
        """The rows after (value, last_id) in this order."""
        column, key = calls.c[self.field], calls.c.id
        if not column.nullable:
            if self.descending:
                return sa.or_(column < value, sa.and_(column == value, key < last_id))
            return sa.or_(column > value, sa.and_(column == value, key > last_id))
        if self.descending:
            if value is None:
                return sa.and_(column.is_(None), key < last_id)
            return sa.or_(column < value, sa.and_(column == value, key < last_id), column.is_(None))
        if value is None:
            return sa.or_(sa.and_(column.is_(None), key > last_id), column.is_not(None))
        return sa.or_(column > value, sa.and_(column == value, key > last_id))


@dataclass
class CallFilter:
    start: datetime | None = None  # started_at >= start
    end: datetime | None = None  # started_at < end
    direction: str | None = None
    status: str | None = None  # answered | no_answer | busy | abandoned | failed | live
    missed: bool | None = None
    operator: str | None = None  # who answered or was rung
    operator_role: str | None = None  # "answered" (by the operator) | "rang" (them) | None: either
    number: str | None = None  # customer's E.164
    # Any 4+ consecutive digits of the customer's number (alternatives: "8916..." and "7916...").
    number_digits: list[str] | None = None
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


def encode_sorted_cursor(sort: Sort, value: Any, call_id: int) -> str:
    shown = value.astimezone(UTC).isoformat() if isinstance(value, datetime) else value
    raw = json.dumps({"sort": sort.text, "after": [shown, call_id]}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_sorted_cursor(cursor: str, sort: Sort) -> tuple[Any, int]:
    """The (value, id) a cursor of a `sort` page continues after; BadCursor when it is not one, or
    was made for another order."""
    try:
        raw = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise BadCursor("the cursor is not one this API gave out") from None
    if not isinstance(raw, dict):
        raise BadCursor("the cursor is not one this API gave out for this 'sort'")
    if raw.get("sort") != sort.text:
        raise BadCursor("the cursor was given out for another 'sort'")
    after = raw.get("after")
    if not (isinstance(after, list) and len(after) == 2 and isinstance(after[1], int)
            and not isinstance(after[1], bool)):
        raise BadCursor("the cursor is not one this API gave out")
    value, call_id = after
    if sort.field == "started_at":
        try:
            value = datetime.fromisoformat(value)
        except (TypeError, ValueError):
            raise BadCursor("the cursor is not one this API gave out") from None
        if value.tzinfo is None:
            raise BadCursor("the cursor is not one this API gave out")
    elif value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise BadCursor("the cursor is not one this API gave out")
    return value, call_id


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        ts, call_id = json.loads(raw)
        when = datetime.fromisoformat(ts)
        # An id a database column can hold: 10**26 would be an OverflowError in the driver.
        if (when.tzinfo is None or isinstance(call_id, bool) or not isinstance(call_id, int)
                or not 0 <= call_id < 2**63):
            raise ValueError("bad cursor")
        return when, call_id
    except (ValueError, TypeError, binascii.Error, json.JSONDecodeError, UnicodeDecodeError):
        raise BadCursor("the cursor is not one this API gave out") from None


def _took_part(extension: str) -> Any:
    """The extension answered the call, or one of its legs was that operator's phone."""
    leg = sa.select(call_legs.c.id).where(call_legs.c.call_id == calls.c.id,
                                          call_legs.c.extension == extension)
    return sa.or_(calls.c.operator == extension, leg.exists())


def _rang(extension: str) -> Any:
    leg = sa.select(call_legs.c.id).where(call_legs.c.call_id == calls.c.id,
                                          call_legs.c.extension == extension)
    return leg.exists()


# The migration's FTS5 table over calls.customer_number (SQLite; PostgreSQL uses pg_trgm).
NUMBER_FTS_TABLE = "calls_number_fts"
# Search objects the migration creates per dialect (not declared as tables / indexes).
SEARCH_OBJECTS = frozenset({
    *(f"{t}{s}" for t in ("calls_number_fts", "client_phones_fts")
      for s in ("", "_data", "_idx", "_docsize", "_config", "_content")),
    "ix_calls_customer_number_trgm", "ix_client_phones_e164_trgm", "ix_client_phones_suffix_trgm",
})


def _where(f: CallFilter, dialect: str = "sqlite") -> list[Any]:
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
        if f.operator_role == "answered":
            conds.append(c.operator == f.operator)
        elif f.operator_role == "rang":
            conds.append(_rang(f.operator))
        else:
            conds.append(_took_part(f.operator))
    if f.visible_to is not None:
        conds.append(_took_part(f.visible_to))
    if f.number:
        conds.append(c.customer_number == f.number)
    if f.number_digits:
        conds.append(ids_containing(dialect, calls, ["customer_number"], NUMBER_FTS_TABLE,
                                    f.number_digits))
    if f.client_id is not None:
        conds.append(c.client_id == f.client_id)
    if f.did:
        conds.append(c.did == f.did)
    if f.source:
        conds.append(c.source == f.source)
    return conds + f.extra


async def list_calls(conn: AsyncConnection, f: CallFilter, limit: int, cursor: str | None = None,
                     sort: Sort | None = None) -> tuple[list[CallRecord], str | None]:
    """A page of calls in `sort` order (newest first by default), and the cursor of the next page
    (None on the last)."""
    sort = sort or Sort()
    query = sa.select(calls).where(*_where(f, conn.dialect.name))
    if cursor and sort.is_default:
        # The newest-first cursor keeps its original shape: cursors given out before stay valid.
        when, last_id = decode_cursor(cursor)
        query = query.where(sort.after(when, last_id))
    elif cursor:
        query = query.where(sort.after(*decode_sorted_cursor(cursor, sort)))
    query = query.order_by(*sort.order_by()).limit(limit + 1)
    rows = (await conn.execute(query)).all()
    page = rows[:limit]
    next_cursor = None
    if len(rows) > limit:
        last = page[-1]
        next_cursor = (encode_cursor(last.started_at, last.id) if sort.is_default
                       else encode_sorted_cursor(sort, getattr(last, sort.field), last.id))
    return [record_from_row(r) for r in page], next_cursor


async def select_page(conn: AsyncConnection, f: CallFilter, columns: list[Any], limit: int,
                      after: tuple[datetime, int] | None = None) -> list[Any]:
    """Rows of just `columns` (started_at and id always among them), newest first, after the
    (started_at, id) of the previous page: for bulk readers (the export), which need neither
    whole records nor opaque cursors."""
    query = sa.select(*columns).where(*_where(f, conn.dialect.name))
    if after is not None:
        when, last_id = after
        query = query.where(sa.or_(calls.c.started_at < when,
                                   sa.and_(calls.c.started_at == when, calls.c.id < last_id)))
    query = query.order_by(calls.c.started_at.desc(), calls.c.id.desc()).limit(limit)
    return list((await conn.execute(query)).all())


async def count_calls(conn: AsyncConnection, f: CallFilter) -> int:
    query = sa.select(sa.func.count()).select_from(calls).where(*_where(f, conn.dialect.name))
    return int((await conn.execute(query)).scalar_one())


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


async def called_back(conn: AsyncConnection, records: list[CallRecord]) -> dict[int, str]:
    """For missed calls: when a later call with the same number was answered (the customer was
    called back, or called again and got through), by call id."""
    missed = [r for r in records if r.missed and r.customer_number and r.id is not None]
    if not missed:
        return {}
    numbers = sorted({r.customer_number for r in missed if r.customer_number})
    rows = await conn.execute(
        sa.select(calls.c.customer_number, sa.func.max(calls.c.answered_at))
        .where(calls.c.customer_number.in_(numbers), calls.c.status == "answered")
        .group_by(calls.c.customer_number))
    latest = {number: at for number, at in rows if at is not None}
    out: dict[int, str] = {}
    for r in missed:
        at = latest.get(r.customer_number or "")
        if at is not None and at.timestamp() > r.started_at and r.id is not None:
            out[r.id] = iso(at) or ""
    return out
