"""OpenAPI fragment of the reports."""

from __future__ import annotations

from pbx_bridge.http.openapi import ISO_TIME, Fragment, errors, nullable, query, ref
from pbx_bridge.reports.summary import GROUPS

OPENAPI = Fragment(
    paths={"/api/v1/reports/summary": {"get": {
        "summary": "Calls, answered, missed, missed rate, average wait and talk per group "
                   "(manager, admin)",
        "tags": ["reports"],
        "parameters": [
            query("from", ISO_TIME, "calls started at or after", required=True),
            query("to", ISO_TIME, "calls started before", required=True),
            query("group_by", {"enum": list(GROUPS)}, "day (UTC), operator, did or source"),
            query("format", {"enum": ["json", "csv"]}, "csv: one row per group plus a total"),
        ],
        "responses": {"200": {"description": "OK", "content": {
            "application/json": {"schema": ref("Summary")},
            "text/csv": {"schema": {"type": "string"}}}}, **errors(422)}}}},
    schemas={
        "SummaryRow": {"type": "object", "additionalProperties": False,
                       "required": ["group", "calls", "answered", "missed", "missed_rate",
                                    "avg_wait_seconds", "avg_talk_seconds"],
                       "properties": {"group": nullable({"type": "string"}),
                                      "calls": {"type": "integer"}, "answered": {"type": "integer"},
                                      "missed": {"type": "integer"}, "missed_rate": {"type": "number"},
                                      "avg_wait_seconds": nullable({"type": "number"}),
                                      "avg_talk_seconds": nullable({"type": "number"})}},
        "Summary": {"type": "object", "required": ["from", "to", "group_by", "rows", "total"],
                    "properties": {"from": ISO_TIME, "to": ISO_TIME, "group_by": {"enum": list(GROUPS)},
                                   "rows": {"type": "array", "items": ref("SummaryRow")},
                                   "total": ref("SummaryRow")}},
    },
)
