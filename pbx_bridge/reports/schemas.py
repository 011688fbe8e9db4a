"""OpenAPI fragment of the reports."""

from __future__ import annotations

from pbx_bridge.http.openapi import ISO_TIME, Fragment, errors, nullable, query, ref
from pbx_bridge.reports.summary import DIRECTIONS, GROUPS

_COUNT = {"type": "integer", "minimum": 0}

OPENAPI = Fragment(
    paths={"/api/v1/reports/summary": {"get": {
        "summary": "Calls, answered, missed, missed rate, average wait and talk per group "
                   "(manager, admin)",
        "description": "Finished inbound and outbound calls (internal calls excluded). "
                       "missed_rate = missed / inbound calls. group_by=operator: an answered "
                       "call counts for its operator, an unanswered one for every operator it "
                       "rang, or for group null (no operator) when it rang nobody. "
                       "group_by=source: the DID's ad channel from crm.did_sources (an unnamed "
                       "DID is its own group, no DID = null). Days are local days in "
                       "web.report_timezone.",
        "tags": ["reports"],
        "parameters": [
            query("from", ISO_TIME, "calls started at or after", required=True),
            query("to", ISO_TIME, "calls started before", required=True),
            query("group_by", {"enum": list(GROUPS)}, "day (report time zone), operator, did or source"),
            query("direction", {"enum": list(DIRECTIONS)}, "all (default), inbound or outbound"),
            query("format", {"enum": ["json", "csv"]}, "csv: one row per group plus a total"),
        ],
        "responses": {"200": {"description": "OK", "content": {
            "application/json": {"schema": ref("Summary")},
            "text/csv": {"schema": {"type": "string"}}}}, **errors(422)}}}},
    schemas={
        "SummaryRow": {"type": "object", "additionalProperties": False,
                       "required": ["group", "calls", "answered", "missed", "missed_rate",
                                    "avg_wait_seconds", "avg_talk_seconds", "inbound", "outbound",
                                    "unanswered_outbound"],
                       "properties": {"group": nullable({"type": "string"}),
                                      "calls": _COUNT, "answered": _COUNT, "missed": _COUNT,
                                      "inbound": _COUNT, "outbound": _COUNT,
                                      "unanswered_outbound": _COUNT,
                                      "missed_rate": {"type": "number", "minimum": 0, "maximum": 1},
                                      "avg_wait_seconds": nullable({"type": "number"}),
                                      "avg_talk_seconds": nullable({"type": "number"})}},
        "WaitBand": {"type": "object", "additionalProperties": False,
                     "required": ["low_seconds", "high_seconds", "answered", "missed"],
                     "properties": {"low_seconds": {"type": "number"},
                                    "high_seconds": nullable({"type": "number"}),
                                    "answered": _COUNT, "missed": _COUNT}},
        "Summary": {"type": "object",
                    "required": ["from", "to", "group_by", "direction", "timezone", "rows", "total",
                                 "wait_bands"],
                    "properties": {"from": ISO_TIME, "to": ISO_TIME, "group_by": {"enum": list(GROUPS)},
                                   "direction": {"enum": list(DIRECTIONS)},
                                   "timezone": {"type": "string"},
                                   "rows": {"type": "array", "items": ref("SummaryRow")},
                                   "total": ref("SummaryRow"),
                                   "wait_bands": {"type": "array", "items": ref("WaitBand")}}},
    },
)
