"""GET /api/v1/reports/summary?from&to&group_by=day|operator|did|source[&format=csv]."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from pbx_bridge.http.app_keys import RUNTIME
from pbx_bridge.http.auth import require
from pbx_bridge.http.errors import ApiError
from pbx_bridge.http.params import query_choice, query_time
from pbx_bridge.reports.summary import GROUPS, summary, totals

CSV_COLUMNS = ("group", "calls", "answered", "missed", "missed_rate", "avg_wait_seconds",
               "avg_talk_seconds")


def did_sources(services: Mapping[str, Any]) -> Mapping[str, str]:
    """DID -> ad channel name, as the CRM feature publishes it in services["did_sources"]."""
    found = services.get("did_sources")
    return found if isinstance(found, Mapping) else {}


async def summary_handler(request: web.Request) -> web.StreamResponse:
    require(request, "manager")
    start, end = query_time(request, "from"), query_time(request, "to")
    if start is None or end is None:
        raise ApiError(422, "invalid_parameter", "'from' and 'to' are required (ISO 8601 times)")
    if end <= start:
        raise ApiError(422, "invalid_parameter", "'to' must be after 'from'")
    group_by: Any = query_choice(request, "group_by", GROUPS) or "day"
    fmt = query_choice(request, "format", ("json", "csv")) or "json"
    runtime = request.app[RUNTIME]
    async with runtime.engine.connect() as conn:
        rows = await summary(conn, start, end, group_by, did_sources(runtime.services))
    total = totals(rows)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(CSV_COLUMNS)
        for row in [*rows, total]:
            d = row.to_dict()
            if row is total:
                d["group"] = "total"
            writer.writerow(["" if d[c] is None else d[c] for c in CSV_COLUMNS])
        return web.Response(text=out.getvalue(), content_type="text/csv", charset="utf-8", headers={
            "Content-Disposition": f'attachment; filename="summary-{group_by}.csv"'})
    return web.json_response({
        "from": start.isoformat(), "to": end.isoformat(), "group_by": group_by,
        "rows": [r.to_dict() for r in rows], "total": total.to_dict(),
    })


def setup(app: web.Application) -> None:
    app.router.add_get("/api/v1/reports/summary", summary_handler)
