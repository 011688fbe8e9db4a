"""A CEL row as plain data: one line of Asterisk's `cel` table (cel_pgsql, cel_odbc), with its
event time made an epoch float in the zone the PBX wrote it in.

See shared notes `cel.md`: `eventtype`, `eventtime`, the channel's caller ID and dialplan
position at that event (`cid_num`, `cid_name`, `context`, `exten`), `channame` / `uniqueid` /
`linkedid` as in AMI, `appname` / `appdata`, `peer`, and `extra` (JSON for HANGUP, BRIDGE_*,
*TRANSFER, PICKUP and USER_DEFINED).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

# The columns the rebuild reads (Asterisk's names); every CEL table has them.
COLUMNS = ("eventtype", "eventtime", "userdeftype", "cid_name", "cid_num", "exten", "context",
           "channame", "appname", "appdata", "uniqueid", "linkedid", "peer", "extra")


class CelRowError(ValueError):
    """A row that cannot be read (no event time, no channel ids)."""


@dataclass(slots=True)
class CelRow:
    eventtype: str
    eventtime: float  # epoch seconds (UTC)
    uniqueid: str
    linkedid: str
    channame: str = ""
    cid_num: str = ""
    cid_name: str = ""
    exten: str = ""
    context: str = ""
    appname: str = ""
    appdata: str = ""
    peer: str = ""
    extra: str = ""
    userdeftype: str = ""
    id: int = 0  # the table's own order, when it has an id column
    _parsed: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    def extra_json(self) -> dict[str, Any]:
        """`extra` as a mapping ({} when empty or not JSON: old Asterisks wrote plain text);
        parsed once."""
        if self._parsed is None:
            self._parsed = {}
            if self.extra and self.extra[0] == "{":
                try:
                    data = json.loads(self.extra)
                except ValueError:
                    data = None
                if isinstance(data, dict):
                    self._parsed = data
        return self._parsed


@dataclass(slots=True)
class CelCalls:
    """Queue item: the CEL rows of calls the log lacks (or has only in part), read by the
    backfill, to be rebuilt and saved by the call pipeline in order with the live events."""

    pbx: str
    rows: list[CelRow]
    reason: str = "sweep"  # start | reconnect | sweep | command
    # On the last batch of a sweep: CEL is read up to this time (epoch seconds), saved with the
    # calls in one transaction, so the next sweep starts where this one is known to have ended.
    swept_until: float | None = None


def zone(name: str) -> tzinfo:
    """`cel_timezone`: "UTC" (cel_pgsql with usegmtime) or the PBX's zone (local-time rows)."""
    return UTC if name.upper() == "UTC" else ZoneInfo(name)


def epoch(value: Any, tz: tzinfo) -> float:
    """An eventtime as the driver gives it (a datetime, naive in the PBX's zone or aware; or the
    text `2026-12-05 14:34:51.348783`) -> epoch seconds."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            raise CelRowError(f"eventtime {value!r} is not a time") from None
    if not isinstance(value, datetime):
        raise CelRowError(f"eventtime {value!r} is not a time")
    if value.tzinfo is None:
        value = value.replace(tzinfo=tz)
    return value.timestamp()


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def rows_from_tuples(columns: Sequence[str], tuples: Iterable[Sequence[Any]], tz: tzinfo,
                     ) -> tuple[list[CelRow], int]:
    """Query results (in `columns` order) -> CelRows, fast (the backfill reads millions);
    returns the rows and how many were unreadable (skipped)."""
    at = {name: columns.index(name) for name in columns}
    i_type, i_time, i_uid, i_lid = at["eventtype"], at["eventtime"], at["uniqueid"], at["linkedid"]
    i_ch, i_num, i_name, i_exten, i_ctx, i_app, i_data, i_peer, i_extra, i_ud = (
        at[name] for name in ("channame", "cid_num", "cid_name", "exten", "context", "appname",
                              "appdata", "peer", "extra", "userdeftype"))
    i_id = at.get("id")
    out: list[CelRow] = []
    bad = 0
    utc = tz is UTC
    for t in tuples:
        uid, lid, when = t[i_uid], t[i_lid], t[i_time]
        if not uid or not lid or not isinstance(when, datetime):
            bad += 1
            continue
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC if utc else tz)
        row = CelRow((t[i_type] or "").upper(), when.timestamp(), str(uid), str(lid),
                     t[i_ch] or "", t[i_num] or "", t[i_name] or "", t[i_exten] or "",
                     t[i_ctx] or "", t[i_app] or "", t[i_data] or "", t[i_peer] or "",
                     t[i_extra] or "", t[i_ud] or "")
        if i_id is not None and t[i_id] is not None:
            row.id = int(t[i_id])
        out.append(row)
    return out, bad


def row_from_mapping(data: Mapping[str, Any], tz: tzinfo) -> CelRow:
    """A database row (or a CSV line) by column name -> CelRow. Raises CelRowError."""
    uniqueid = _text(data.get("uniqueid"))
    linkedid = _text(data.get("linkedid"))
    if not uniqueid or not linkedid:
        raise CelRowError("a row without uniqueid or linkedid")
    raw_id = data.get("id")
    try:
        row_id = int(raw_id) if raw_id not in (None, "") else 0
    except (TypeError, ValueError):
        row_id = 0
    return CelRow(
        eventtype=_text(data.get("eventtype")).upper(),
        eventtime=epoch(data.get("eventtime"), tz),
        uniqueid=uniqueid,
        linkedid=linkedid,
        channame=_text(data.get("channame")),
        cid_num=_text(data.get("cid_num")),
        cid_name=_text(data.get("cid_name")),
        exten=_text(data.get("exten")),
        context=_text(data.get("context")),
        appname=_text(data.get("appname")),
        appdata=_text(data.get("appdata")),
        peer=_text(data.get("peer")),
        extra=_text(data.get("extra")),
        userdeftype=_text(data.get("userdeftype")),
        id=row_id,
    )
