"""Summary report: calls, answered, missed, missed rate, average wait and talk, per group.

One grouped query that runs on SQLite and PostgreSQL; days are UTC days. Only finished calls
count (a live call has no outcome yet). `source` groups by the DID's ad channel through the
mapping given (DID E.164 -> channel name); DIDs without a name are their own group.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from pbx_bridge.db.schema import calls

GroupBy = Literal["day", "operator", "did", "source"]
GROUPS: tuple[GroupBy, ...] = ("day", "operator", "did", "source")


@dataclass
class SummaryRow:
    group: str | None
    calls: int
    answered: int
    missed: int
    avg_wait_seconds: float | None
    avg_talk_seconds: float | None

    @property
    def missed_rate(self) -> float:
        return round(self.missed / self.calls, 4) if self.calls else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"group": self.group, "calls": self.calls, "answered": self.answered,
                "missed": self.missed, "missed_rate": self.missed_rate,
                "avg_wait_seconds": _round(self.avg_wait_seconds),
                "avg_talk_seconds": _round(self.avg_talk_seconds)}


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 2)


def _day(dialect: str) -> Any:
    if dialect == "postgresql":
        return sa.func.to_char(sa.func.timezone("UTC", calls.c.started_at), "YYYY-MM-DD")
    return sa.func.strftime("%Y-%m-%d", calls.c.started_at)  # SQLite keeps UTC text


async def summary(conn: AsyncConnection, start: datetime, end: datetime, group_by: GroupBy,
                  sources: Mapping[str, str] | None = None) -> list[SummaryRow]:
    key: Any = {"day": _day(conn.dialect.name), "operator": calls.c.operator,
                "did": calls.c.did, "source": calls.c.did}[group_by]
    answered = calls.c.status == "answered"
    query = (
        sa.select(
            key.label("grp"),
            sa.func.count().label("calls"),
            sa.func.sum(sa.case((answered, 1), else_=0)).label("answered"),
            sa.func.sum(sa.case((calls.c.missed == sa.true(), 1), else_=0)).label("missed"),
            sa.func.avg(calls.c.wait_seconds).label("avg_wait"),
            sa.func.avg(sa.case((answered, calls.c.talk_seconds), else_=None)).label("avg_talk"),
        )
        .where(calls.c.started_at >= start, calls.c.started_at < end, calls.c.status.is_not(None))
        .group_by(key)
        .order_by(key)
    )
    rows = [SummaryRow(r.grp, int(r.calls), int(r.answered or 0), int(r.missed or 0),
                       _float(r.avg_wait), _float(r.avg_talk))
            for r in (await conn.execute(query)).all()]
    if group_by == "source":
        rows = _merge_by_source(rows, sources or {})
    return rows


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _merge_by_source(rows: list[SummaryRow], sources: Mapping[str, str]) -> list[SummaryRow]:
    merged: dict[str | None, list[SummaryRow]] = {}
    for row in rows:
        merged.setdefault(sources.get(row.group or "", row.group), []).append(row)
    out = []
    for name, parts in merged.items():
        total = sum(p.calls for p in parts)
        answered = sum(p.answered for p in parts)
        out.append(SummaryRow(
            name, total, answered, sum(p.missed for p in parts),
            _weighted([(p.avg_wait_seconds, p.calls) for p in parts]),
            _weighted([(p.avg_talk_seconds, p.answered) for p in parts])))
    return sorted(out, key=lambda r: (r.group is None, r.group or ""))


def _weighted(pairs: list[tuple[float | None, int]]) -> float | None:
    known = [(v, w) for v, w in pairs if v is not None and w > 0]
    weight = sum(w for _, w in known)
    return sum(v * w for v, w in known) / weight if weight else None


def totals(rows: list[SummaryRow]) -> SummaryRow:
    total = sum(r.calls for r in rows)
    answered = sum(r.answered for r in rows)
    return SummaryRow(None, total, answered, sum(r.missed for r in rows),
                      _weighted([(r.avg_wait_seconds, r.calls) for r in rows]),
                      _weighted([(r.avg_talk_seconds, r.answered) for r in rows]))
