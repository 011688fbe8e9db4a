"""OpenAPI fragment of the call log."""

from __future__ import annotations

from pbx_bridge.calls.query import DEFAULT_SORT, SORT_FIELDS
from pbx_bridge.http.openapi import (
    EXTENSION,
    ISO_TIME,
    Fragment,
    errors,
    json_body,
    nullable,
    path_param,
    query,
    ref,
    text,
)

_STR_OR_NULL = nullable({"type": "string"})
_TIME_OR_NULL = nullable(ISO_TIME)
_NUM_OR_NULL = nullable({"type": "number"})

RECORD_PROPERTIES = {
    "id": {"type": "integer"}, "pbx": {"type": "string"}, "linkedid": {"type": "string"},
    "direction": {"enum": ["inbound", "outbound", "internal", "unknown"]},
    "status": nullable({"enum": ["answered", "no_answer", "busy", "abandoned", "failed"]}),
    "missed": {"type": "boolean"}, "customer_number": _STR_OR_NULL, "customer_name": _STR_OR_NULL,
    "did": _STR_OR_NULL, "dialled": _STR_OR_NULL, "operator": _STR_OR_NULL,
    "operators_rung": {"type": "array", "items": {"type": "string"}}, "queue": _STR_OR_NULL,
    "transfers": {"type": "array", "items": ref("Transfer")},
    "started_at": ISO_TIME, "answered_at": _TIME_OR_NULL, "ended_at": _TIME_OR_NULL,
    "wait_seconds": _NUM_OR_NULL, "talk_seconds": _NUM_OR_NULL,
    "click_to_call_id": _STR_OR_NULL, "client_id": nullable({"type": "integer"}),
    # ami: heard live; cel: rebuilt from Asterisk's CEL (the bridge was not listening);
    # ami+cel: begun live, completed from CEL.
    "source": {"enum": ["ami", "cel", "ami+cel"]},
}

OPENAPI = Fragment(
    paths={
        "/api/v1/calls": {"get": {
            "summary": "Call log, newest first unless `sort` says otherwise (crm, manager, operator: own "
                       "calls, admin)",
            "tags": ["calls"],
            "parameters": [
                query("from", ISO_TIME, "started at or after"),
                query("to", ISO_TIME, "started before"),
                query("direction", {"enum": ["inbound", "outbound", "internal", "unknown"]}, ""),
                query("status", {"enum": ["answered", "no_answer", "busy", "abandoned", "failed",
                                          "live"]}, "live = in progress"),
                query("missed", {"type": "boolean"}, "inbound and not answered"),
                query("operator", EXTENSION,
                      "answered or was rung (see operator_role)"),
                query("operator_role", {"enum": ["answered", "rang"]},
                      "answered = the operator answered; rang = the call rang the operator"),
                query("number", text(64),
                      "customer's number in any format (exact), or any 4+ consecutive digits of it"),
                query("client_id", {"type": "integer", "minimum": 1}, ""),
                query("did", text(64), "number dialled by the customer, any format"),
                query("source", {"enum": ["ami", "cel", "ami+cel"]}, "where the record came from"),
                query("q", {"type": "string", "minLength": 1, "maxLength": 500},
                      "full-text search in transcripts (words, \"phrases\", or, -word); each "
                      "item then carries `match` (snippet, speaker, offset in seconds)"),
                query("limit", {"type": "integer", "minimum": 1}, "page size"),
                query("sort", {"enum": [f"{d}{f}" for f in SORT_FIELDS for d in ("-", "")]},
                      "order of the whole journal (every page): a field, descending after '-'; "
                      f"default {DEFAULT_SORT}. Calls without the value (no talk time: not "
                      "answered) come last when descending, first when ascending; a cursor only "
                      "continues the sort it was given out with"),
                                query("cursor", text(512), "next_cursor of the previous page"),
            ],
            "responses": {"200": json_body(ref("CallPage")), **errors(400, 422)}}},
        "/api/v1/calls/export": {"get": {
            "summary": "The filtered journal as a file, streamed: CSV for Excel (`;`, UTF-8 BOM) or "
                       "XLSX, headers in `lang` (crm, manager, operator: own calls, admin)",
            "tags": ["calls"],
            "parameters": [query("format", {"enum": ["csv", "xlsx"]}, "default csv"),
                           query("lang", {"enum": ["ru", "en"]}, "headers' language"),
                           query("from", ISO_TIME, ""), query("to", ISO_TIME, ""),
                           query("direction", {"enum": ["inbound", "outbound", "internal", "unknown"]}, ""),
                           query("status", {"enum": ["answered", "no_answer", "busy", "abandoned",
                                                     "failed", "live"]}, ""),
                           query("missed", {"type": "boolean"}, ""),
                           query("operator", EXTENSION, ""),
                           query("operator_role", {"enum": ["answered", "rang"]}, ""),
                           query("number", text(64), ""),
                           query("did", text(64), ""),
                           query("q", {"type": "string", "minLength": 1, "maxLength": 500}, "")],
            "responses": {"200": {"description": "the file", "content": {
                "text/csv": {"schema": {"type": "string"}},
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": {
                    "schema": {"type": "string", "format": "binary"}}}},
                **errors(400, 422)}}},
        "/api/v1/calls/{id}": {"get": {
            "summary": "One call with legs, transfers, client, recording, transcript",
            "tags": ["calls"],
            "parameters": [path_param("id", {"type": "integer"})],
            "responses": {"200": json_body(ref("CallDetail")), **errors(404)}}},
    },
    schemas={
        "Transfer": {"type": "object", "required": ["kind", "at", "from_operator", "to_operator"],
                     "properties": {"kind": {"enum": ["blind", "attended", "pickup"]}, "at": ISO_TIME,
                                    "from_operator": _STR_OR_NULL, "to_operator": _STR_OR_NULL}},
        "CallRecord": {"type": "object", "additionalProperties": False,
                       "required": list(RECORD_PROPERTIES), "properties": RECORD_PROPERTIES},
        "Leg": {"type": "object",
                "required": ["uniqueid", "channel", "role", "extension", "created_at", "answered_at",
                             "hungup_at", "hangup_cause"],
                "properties": {"uniqueid": {"type": "string"}, "channel": {"type": "string"},
                               "role": {"enum": ["operator", "customer", "local", "other"]},
                               "extension": _STR_OR_NULL, "created_at": ISO_TIME,
                               "answered_at": _TIME_OR_NULL, "hungup_at": _TIME_OR_NULL,
                               "hangup_cause": _STR_OR_NULL}},
        "CallDetail": {
            "type": "object",
            "required": [*RECORD_PROPERTIES, "legs", "client", "recording", "transcript"],
            "properties": {**RECORD_PROPERTIES,
                           "legs": {"type": "array", "items": ref("Leg")},
                           "ended_during_outage": {"type": "boolean"},
                           "client": nullable({"type": "object"}),
                           "recording": nullable({"type": "object"}),
                           "transcript": nullable({"type": "object"})}},
        "TranscriptMatch": {"type": "object", "required": ["snippet", "speaker", "offset"],
                            "properties": {"snippet": {"type": "string"}, "speaker": _STR_OR_NULL,
                                           "offset": _NUM_OR_NULL}},
        "CallListItem": {"type": "object", "additionalProperties": False,
                         "required": list(RECORD_PROPERTIES),
                         "properties": {**RECORD_PROPERTIES, "match": ref("TranscriptMatch"),
                                        # missed calls: when a later call with the number was
                                        # answered (null: not called back yet)
                                        "called_back_at": _TIME_OR_NULL}},
        "CallPage": {"type": "object", "required": ["items", "next_cursor"], "additionalProperties": False,
                     "properties": {"items": {"type": "array", "items": ref("CallListItem")},
                                    "next_cursor": _STR_OR_NULL}},
    },
)
