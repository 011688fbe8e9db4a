"""The summary report's numbers, read from the calls table (for the server-drawn charts and CSV).

The API's report endpoint (issue 5) was not merged when this was written; this module reads the
calls table directly so the UI can draw its charts on the server. It groups in Python, one pass
over the range's ended calls, which keeps it identical on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
from bisect import bisect_right
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from pbx_bridge.db.schema import calls

MAX_DAYS = 366
# Upper bounds (seconds) of the wait-time bands; the last band is open.
WAIT_BANDS: tuple[float, ...] = (10, 20, 30, 60, 120)
ReportDirection = Literal["all", "inbound", "outbound"]
GROUPINGS = ("day", "operator", "did")


class ReportInputError(ValueError):
    pass


@dataclass
class Bucket:
    key: str
    calls: int = 0
    inbound: int = 0
    answered: int = 0
    missed: int = 0  # inbound calls nobody answered
    unanswered_outbound: int = 0
    wait_total: float = 0.0
    wait_count: int = 0
    talk_total: float = 0.0
    talk_count: int = 0

    @property
    def missed_rate(self) -> float | None:
        # Share of inbound calls nobody answered (outbound calls cannot be missed).
        return None if self.inbound == 0 else self.missed / self.inbound

    @property
    def avg_wait(self) -> float | None:
        return None if self.wait_count == 0 else self.wait_total / self.wait_count

    @property
    def avg_talk(self) -> float | None:
        return None if self.talk_count == 0 else self.talk_total / self.talk_count

    def add(
        self, inbound: bool, answered: bool, missed: bool, wait: float | None, talk: float | None
    ) -> None:
        self.calls += 1
        self.inbound += inbound
        if answered:
            self.answered += 1
            if talk is not None:
                self.talk_total += talk
                self.talk_count += 1
        elif missed:
            self.missed += 1
        else:
            self.unanswered_outbound += 1
        if wait is not None:
            self.wait_total += wait
            self.wait_count += 1


@dataclass
class WaitBand:
    low: float
    high: float | None
    answered: int = 0
    missed: int = 0


@dataclass
class SummaryReport:
    first_day: date
    last_day: date
    timezone: str
    direction: ReportDirection
    totals: Bucket
    by_day: list[Bucket]
    by_operator: list[Bucket]
    by_did: list[Bucket]
    wait_bands: list[WaitBand] = field(default_factory=list)

    def rows(self, group_by: str) -> list[Bucket]:
        if group_by == "day":
            return self.by_day
        if group_by == "operator":
            return self.by_operator
        if group_by == "did":
            return self.by_did
        raise ReportInputError(f"group_by must be one of {', '.join(GROUPINGS)}")


def parse_day(text: str | None, default: date) -> date:
    if not text:
        return default
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ReportInputError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def check_range(first_day: date, last_day: date) -> None:
    if last_day < first_day:
        raise ReportInputError("the end date is before the start date")
    if (last_day - first_day).days + 1 > MAX_DAYS:
        raise ReportInputError(f"a report covers at most {MAX_DAYS} days")


def _epoch_seconds(conn: AsyncConnection) -> sa.ColumnElement[float]:
    """started_at as epoch seconds computed by the database (no datetime objects per row)."""
    if conn.dialect.name == "sqlite":  # stored as naive UTC text
        return (sa.func.julianday(calls.c.started_at) - 2440587.5) * 86400.0
    return sa.cast(sa.extract("epoch", calls.c.started_at), sa.Float)


async def summary_report(
    conn: AsyncConnection, first_day: date, last_day: date, timezone: str,
    direction: ReportDirection = "all",
) -> SummaryReport:
    """Ended customer calls (not internal ones) started on first_day..last_day in `timezone`."""
    check_range(first_day, last_day)
    tz = ZoneInfo(timezone)
    day_list = [first_day + timedelta(days=i) for i in range((last_day - first_day).days + 1)]
    # Local midnights as epoch seconds: a call's day is found by bisection (exact across DST).
    midnights = [datetime.combine(d, time(), tz).timestamp() for d in day_list]
    start = datetime.combine(first_day, time(), tz)
    end = datetime.combine(last_day + timedelta(days=1), time(), tz)
    query = (
        sa.select(calls.c.direction, calls.c.status, calls.c.missed, calls.c.operator,
                  sa.type_coerce(calls.c.operators_rung, sa.Text), calls.c.did,
                  _epoch_seconds(conn), calls.c.wait_seconds, calls.c.talk_seconds)
        .where(calls.c.started_at >= start, calls.c.started_at < end, calls.c.status.is_not(None),
               calls.c.direction.in_(["inbound", "outbound"] if direction == "all" else [direction]))
    )
    totals = Bucket("total")
    days = [Bucket(d.isoformat()) for d in day_list]
    operators: dict[str, Bucket] = {}
    dids: dict[str, Bucket] = {}
    bands = [WaitBand(low, high) for low, high in
             zip((0.0, *WAIT_BANDS), (*WAIT_BANDS, None), strict=True)]
    # One fetch: row-by-row streaming costs a thread hop per row on aiosqlite.
    result = await conn.execute(query)
    for call_direction, status, missed_flag, operator, rung, did, epoch, wait, talk in result:
        answered = status == "answered"
        inbound = call_direction == "inbound"
        missed = bool(missed_flag)
        totals.add(inbound, answered, missed, wait, talk)
        index = bisect_right(midnights, epoch) - 1
        if 0 <= index < len(days):
            days[index].add(inbound, answered, missed, wait, talk)
        if answered and operator:
            operators.setdefault(operator, Bucket(operator)).add(inbound, True, False, wait, talk)
        else:
            # Unanswered: every operator it rang shares it (decoded only for these rows).
            # (SQLite hands back the JSON text; asyncpg decodes json columns itself.)
            rung_list = json.loads(rung) if isinstance(rung, str) else (rung or [])
            for ext in dict.fromkeys(rung_list):
                operators.setdefault(ext, Bucket(ext)).add(inbound, False, missed, wait, talk)
        if inbound:
            dids.setdefault(did or "", Bucket(did or "")).add(True, answered, missed, wait, talk)
            if wait is not None and (answered or missed):
                band = bands[bisect_right(WAIT_BANDS, wait)]
                if answered:
                    band.answered += 1
                else:
                    band.missed += 1
    return SummaryReport(
        first_day=first_day, last_day=last_day, timezone=timezone, direction=direction,
        totals=totals, by_day=days,
        by_operator=sorted(operators.values(), key=lambda b: (-b.calls, b.key)),
        by_did=sorted(dids.values(), key=lambda b: (-b.calls, b.key)),
        wait_bands=bands,
    )
