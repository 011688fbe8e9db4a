"""The summary report's numbers, read from the calls table (for the server-drawn charts and CSV).

The API's report endpoint (issue 5) was not merged when this was written; this module reads the
calls table directly so the UI can draw its charts on the server. It groups in Python, one pass
over the range's ended calls, which keeps it identical on SQLite and PostgreSQL.
"""

from __future__ import annotations

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


async def summary_report(
    conn: AsyncConnection, first_day: date, last_day: date, timezone: str,
    direction: ReportDirection = "all",
) -> SummaryReport:
    """Ended customer calls (not internal ones) started on first_day..last_day in `timezone`."""
    check_range(first_day, last_day)
    tz = ZoneInfo(timezone)
    start = datetime.combine(first_day, time(), tz)
    end = datetime.combine(last_day + timedelta(days=1), time(), tz)
    query = (
        sa.select(calls.c.direction, calls.c.status, calls.c.missed, calls.c.operator,
                  calls.c.operators_rung, calls.c.did, calls.c.started_at, calls.c.wait_seconds,
                  calls.c.talk_seconds)
        .where(calls.c.started_at >= start, calls.c.started_at < end, calls.c.status.is_not(None),
               calls.c.direction.in_(["inbound", "outbound"] if direction == "all" else [direction]))
    )
    totals = Bucket("total")
    days = {first_day + timedelta(days=i): Bucket((first_day + timedelta(days=i)).isoformat())
            for i in range((last_day - first_day).days + 1)}
    operators: dict[str, Bucket] = {}
    dids: dict[str, Bucket] = {}
    bands = [WaitBand(low, high) for low, high in
             zip((0.0, *WAIT_BANDS), (*WAIT_BANDS, None), strict=True)]
    result = await conn.stream(query)
    async for row in result:
        answered = row.status == "answered"
        inbound = row.direction == "inbound"
        missed = bool(row.missed)
        wait, talk = row.wait_seconds, row.talk_seconds
        totals.add(inbound, answered, missed, wait, talk)
        day = row.started_at.astimezone(tz).date()
        if day in days:
            days[day].add(inbound, answered, missed, wait, talk)
        involved = [row.operator] if answered and row.operator else list(row.operators_rung or [])
        for ext in dict.fromkeys(involved):
            operators.setdefault(ext, Bucket(ext)).add(
                inbound, answered and ext == row.operator, missed, wait, talk)
        if inbound:
            dids.setdefault(row.did or "", Bucket(row.did or "")).add(True, answered, missed, wait, talk)
            if wait is not None and (answered or missed):
                band = next(b for b in bands if b.high is None or wait < b.high)
                if answered:
                    band.answered += 1
                else:
                    band.missed += 1
    return SummaryReport(
        first_day=first_day, last_day=last_day, timezone=timezone, direction=direction,
        totals=totals, by_day=list(days.values()),
        by_operator=sorted(operators.values(), key=lambda b: (-b.calls, b.key)),
        by_did=sorted(dids.values(), key=lambda b: (-b.calls, b.key)),
        wait_bands=bands,
    )
