"""The summary report, for GET /api/v1/reports/summary and the web UI's reports page alike.

Definitions (the usual ones in call centres):
- only finished customer calls count: internal calls and live calls (no outcome yet) do not;
- missed = an inbound call nobody answered; missed rate = missed / inbound calls (outbound calls
  cannot be missed; an outbound call nobody picked up is `unanswered_outbound`);
- per operator: an answered call counts for the operator who took it; an unanswered call counts
  for every operator it rang ("missed by operator"), or for "no operator" (group null) when it
  rang nobody;
- per ad channel (`source`): the DID's name in `crm.did_sources`; a DID without a name is its own
  group, a call without a DID is group null;
- days are local days in the time zone given (from config).

One fetch over the range's finished calls, grouped in Python: identical on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from crm_sync.phones import normalize
from pbx_bridge.db.schema import calls

GroupBy = Literal["day", "operator", "did", "source"]
GROUPS: tuple[GroupBy, ...] = ("day", "operator", "did", "source")
ReportDirection = Literal["all", "inbound", "outbound"]
DIRECTIONS: tuple[ReportDirection, ...] = ("all", "inbound", "outbound")
# Upper bounds (seconds) of the wait-time bands; the last band is open.
WAIT_BANDS: tuple[float, ...] = (10, 20, 30, 60, 120)


@dataclass
class Bucket:
    key: str | None  # the group: a day, an extension, a DID, a channel; None = no operator / DID
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
    def outbound(self) -> int:
        return self.calls - self.inbound

    @property
    def missed_rate(self) -> float | None:
        return None if self.inbound == 0 else self.missed / self.inbound

    @property
    def avg_wait(self) -> float | None:
        return None if self.wait_count == 0 else self.wait_total / self.wait_count

    @property
    def avg_talk(self) -> float | None:
        return None if self.talk_count == 0 else self.talk_total / self.talk_count

    def add(self, inbound: bool, answered: bool, missed: bool, wait: float | None,
            talk: float | None) -> None:
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

    def to_dict(self) -> dict[str, Any]:
        """The API's SummaryRow (missed_rate 0.0 when there were no inbound calls)."""
        return {"group": self.key, "calls": self.calls, "inbound": self.inbound,
                "outbound": self.outbound, "answered": self.answered, "missed": self.missed,
                "unanswered_outbound": self.unanswered_outbound,
                "missed_rate": round(self.missed_rate or 0.0, 4),
                "avg_wait_seconds": _round(self.avg_wait), "avg_talk_seconds": _round(self.avg_talk)}


@dataclass
class WaitBand:
    low: float
    high: float | None  # None: the open last band
    answered: int = 0
    missed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"low_seconds": self.low, "high_seconds": self.high, "answered": self.answered,
                "missed": self.missed}


@dataclass
class SummaryReport:
    start: datetime
    end: datetime
    timezone: str
    direction: ReportDirection
    totals: Bucket
    by_day: list[Bucket]  # only days with calls, in order (see days_filled)
    by_operator: list[Bucket]
    by_did: list[Bucket]
    by_source: list[Bucket]
    wait_bands: list[WaitBand] = field(default_factory=list)  # inbound answered or missed calls

    def rows(self, group_by: GroupBy) -> list[Bucket]:
        return {"day": self.by_day, "operator": self.by_operator, "did": self.by_did,
                "source": self.by_source}[group_by]

    def days_filled(self, first_day: date, last_day: date) -> list[Bucket]:
        """Every day first_day..last_day, the ones without calls as empty buckets."""
        known = {b.key: b for b in self.by_day}
        count = (last_day - first_day).days + 1
        keys = [(first_day + timedelta(days=i)).isoformat() for i in range(count)]
        return [known.get(k) or Bucket(k) for k in keys]


def ad_channels(did_sources: Mapping[str, str], region: str, max_extension_length: int = 6) -> dict[str, str]:
    """crm.did_sources (DIDs written in any format) as E.164 DID -> ad channel name."""
    names: dict[str, str] = {}
    for raw, name in did_sources.items():
        e164 = normalize(str(raw), region, max_extension_length)
        if e164:
            names[e164] = str(name)
    return names


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 2)


def _epoch_seconds(conn: AsyncConnection) -> sa.ColumnElement[float]:
    """started_at as epoch seconds computed by the database (no datetime objects per row)."""
    if conn.dialect.name == "sqlite":  # stored as naive UTC text
        return (sa.func.julianday(calls.c.started_at) - 2440587.5) * 86400.0
    return sa.cast(sa.extract("epoch", calls.c.started_at), sa.Float)


class _Days:
    """Epoch seconds -> local day (ISO), exact across DST; a cache of day boundaries."""

    def __init__(self, tz: ZoneInfo) -> None:
        self.tz = tz
        self.starts: list[float] = []
        self.keys: list[str] = []
        self.ends: list[float] = []

    def key(self, epoch: float) -> str:
        i = bisect_right(self.starts, epoch) - 1
        if i >= 0 and epoch < self.ends[i]:
            return self.keys[i]
        day = datetime.fromtimestamp(epoch, self.tz).date()
        start = datetime(day.year, day.month, day.day, tzinfo=self.tz).timestamp()
        nxt = day + timedelta(days=1)
        end = datetime(nxt.year, nxt.month, nxt.day, tzinfo=self.tz).timestamp()
        at = bisect_right(self.starts, start)
        self.starts.insert(at, start)
        self.ends.insert(at, end)
        self.keys.insert(at, day.isoformat())
        return day.isoformat()


def _sorted(buckets: Mapping[str | None, Bucket]) -> list[Bucket]:
    # Busiest first; the null group (no operator / no DID) last.
    return sorted(buckets.values(), key=lambda b: (b.key is None, -b.calls, b.key or ""))


async def summary_report(
    conn: AsyncConnection, start: datetime, end: datetime, *, timezone: str = "UTC",
    sources: Mapping[str, str] | None = None, direction: ReportDirection = "all",
) -> SummaryReport:
    """Finished inbound/outbound calls started in [start, end); `sources`: E.164 DID -> channel."""
    names = sources or {}
    days = _Days(ZoneInfo(timezone))
    query = (
        sa.select(calls.c.direction, calls.c.status, calls.c.missed, calls.c.operator,
                  sa.type_coerce(calls.c.operators_rung, sa.Text), calls.c.did,
                  _epoch_seconds(conn), calls.c.wait_seconds, calls.c.talk_seconds)
        .where(calls.c.started_at >= start, calls.c.started_at < end, calls.c.status.is_not(None),
               calls.c.direction.in_(["inbound", "outbound"] if direction == "all" else [direction]))
    )
    totals = Bucket("total")
    by_day: dict[str, Bucket] = {}
    operators: dict[str | None, Bucket] = {}
    dids: dict[str | None, Bucket] = {}
    channels: dict[str | None, Bucket] = {}
    bands = [WaitBand(low, high) for low, high in
             zip((0.0, *WAIT_BANDS), (*WAIT_BANDS, None), strict=True)]
    # One fetch: row-by-row streaming costs a thread hop per row on aiosqlite.
    result = await conn.execute(query)
    for call_direction, status, missed_flag, operator, rung, did, epoch, wait, talk in result:
        answered = status == "answered"
        inbound = call_direction == "inbound"
        missed = bool(missed_flag) and not answered
        facts = (inbound, answered, missed, wait, talk)
        totals.add(*facts)
        day = days.key(float(epoch))
        by_day.setdefault(day, Bucket(day)).add(*facts)
        if answered and operator:
            operators.setdefault(operator, Bucket(operator)).add(*facts)
        else:
            # Unanswered: every operator it rang shares it (decoded only for these rows;
            # SQLite hands back the JSON text, asyncpg decodes json columns itself).
            rung_list = json.loads(rung) if isinstance(rung, str) else (rung or [])
            exts: list[str | None] = list(dict.fromkeys(rung_list)) or [operator or None]
            for ext in exts:
                operators.setdefault(ext, Bucket(ext)).add(*facts)
        did_key = did or None
        dids.setdefault(did_key, Bucket(did_key)).add(*facts)
        channel = names.get(did, did) if did else None
        channels.setdefault(channel, Bucket(channel)).add(*facts)
        if inbound and wait is not None and (answered or missed):
            band = bands[bisect_right(WAIT_BANDS, wait)]
            if answered:
                band.answered += 1
            else:
                band.missed += 1
    return SummaryReport(
        start=start, end=end, timezone=timezone, direction=direction, totals=totals,
        by_day=[by_day[k] for k in sorted(by_day)], by_operator=_sorted(operators),
        by_did=_sorted(dids), by_source=_sorted(channels), wait_bands=bands,
    )
