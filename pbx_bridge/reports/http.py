"""GET /api/v1/reports/summary?from&to&group_by=day|operator|did|source[&direction][&format=csv]."""

from __future__ import annotations

import csv
import io
from typing import Any

from aiohttp import web

from crm_sync.spreadsheet import safe_row
from pbx_bridge.config import Settings
from pbx_bridge.http.app_keys import RUNTIME
from pbx_bridge.http.auth import require
from pbx_bridge.http.errors import ApiError
from pbx_bridge.http.params import query_choice, query_time
from pbx_bridge.reports.summary import DIRECTIONS, GROUPS, ad_channels, summary_report

CSV_COLUMNS = ("group", "calls", "answered", "missed", "missed_rate", "avg_wait_seconds",
               "avg_talk_seconds", "inbound", "outbound", "unanswered_outbound")


def report_sources(settings: Settings) -> dict[str, str]:
    """E.164 DID -> ad channel name, from crm.did_sources."""
    return ad_channels(settings.crm.did_sources, settings.phone.default_region,
                       settings.phone.max_extension_length)


async def summary_handler(request: web.Request) -> web.StreamResponse:
    require(request, "manager")
    start, end = query_time(request, "from"), query_time(request, "to")
    if start is None or end is None:
        raise ApiError(422, "invalid_parameter", "'from' and 'to' are required (ISO 8601 times)")
    if end <= start:
        raise ApiError(422, "invalid_parameter", "'to' must be after 'from'")
    group_by: Any = query_choice(request, "group_by", GROUPS) or "day"
    direction: Any = query_choice(request, "direction", DIRECTIONS) or "all"
    fmt = query_choice(request, "format", ("json", "csv")) or "json"
    runtime = request.app[RUNTIME]
    settings = runtime.settings
    async with runtime.engine.connect() as conn:
        report = await summary_report(conn, start, end, timezone=settings.web.report_timezone,
                                      sources=report_sources(settings), direction=direction)
    rows = report.rows(group_by)
    total = report.totals.to_dict()
    total["group"] = None
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(CSV_COLUMNS)
        for d in [*(r.to_dict() for r in rows), {**total, "group": "total"}]:
            # Group names come from the PBX (a DID) and the config: never a formula.
            writer.writerow(safe_row(["" if d[c] is None else d[c] for c in CSV_COLUMNS]))
        return web.Response(text=out.getvalue(), content_type="text/csv", charset="utf-8", headers={
            "Content-Disposition": f'attachment; filename="summary-{group_by}.csv"'})
    return web.json_response({
        "from": start.isoformat(), "to": end.isoformat(), "group_by": group_by,
        "direction": direction, "timezone": report.timezone,
        "rows": [r.to_dict() for r in rows], "total": total,
        "wait_bands": [b.to_dict() for b in report.wait_bands],
    })


def setup(app: web.Application) -> None:
    app.router.add_get("/api/v1/reports/summary", summary_handler)
