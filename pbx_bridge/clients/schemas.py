"""OpenAPI fragment of client cards, tasks and the dialplan's routing endpoint."""

from __future__ import annotations

from pbx_bridge.http.openapi import (
    ISO_TIME,
    Fragment,
    errors,
    json_body,
    nullable,
    path_param,
    query,
    ref,
)

_S = {"type": "string"}
_SN = nullable(_S)
_STRS = {"type": "array", "items": _S}
_PHONE = {"type": "object", "required": ["e164", "raw"], "properties": {"e164": _SN, "raw": _S}}
_ID = path_param("id", {"type": "integer"})

OPENAPI = Fragment(
    paths={
        "/api/v1/clients": {
            "get": {"summary": "Cards, most recently active first: all, or by phone (any format, or "
                               "any 4+ consecutive digits) or part of a name / company; filters "
                               "(crm, manager, operator, admin)", "tags": ["clients"],
                    "parameters": [query("q", {"type": "string"}, "phone, digits or name"),
                                   query("responsible", {"type": "string"},
                                         "extension; empty = cards without one"),
                                   query("source", {"type": "string"}, "ad channel; empty = none"),
                                   query("limit", {"type": "integer", "minimum": 1, "maximum": 200}, ""),
                                   query("cursor", {"type": "string"}, "next_cursor of the previous page")],
                    "responses": {"200": json_body({"type": "object", "required": ["items", "next_cursor"],
                                                    "properties": {
                        "items": {"type": "array", "items": ref("Client")},
                        "next_cursor": _SN}}), **errors(422)}},
            "post": {"summary": "Create a card (crm, admin)", "tags": ["clients"],
                     "requestBody": {"required": True, "content": {"application/json": {
                         "schema": ref("ClientInput")}}},
                     "responses": {"201": json_body(ref("Client"), "Created"), **errors(400, 422)}},
        },
        "/api/v1/clients/{id}": {
            "get": {"summary": "One card (crm, manager, admin)", "tags": ["clients"], "parameters": [_ID],
                    "responses": {"200": json_body(ref("Client")), **errors(404)}},
            "patch": {"summary": "Change a card (crm, admin)", "tags": ["clients"], "parameters": [_ID],
                      "requestBody": {"required": True, "content": {"application/json": {
                          "schema": ref("ClientChanges")}}},
                      "responses": {"200": json_body(ref("Client")), **errors(400, 404, 422)}},
        },
        "/api/v1/clients/{id}/timeline": {"get": {
            "summary": "A card's calls, tasks and notes, newest first (crm, manager, admin)",
            "tags": ["clients"],
            "parameters": [_ID, query("limit", {"type": "integer", "minimum": 1, "maximum": 500}, ""),
                           query("before_id", {"type": "integer", "minimum": 1}, "next_before_id")],
            "responses": {"200": json_body({"type": "object", "required": ["items", "next_before_id"],
                                            "properties": {"items": {"type": "array",
                                                                     "items": ref("TimelineEntry")},
                                                           "next_before_id": nullable({"type": "integer"})}}),
                          **errors(404, 422)}}},
        "/api/v1/clients/{id}/notes": {"post": {
            "summary": "Add a note to the card's timeline", "tags": ["clients"], "parameters": [_ID],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["text"], "additionalProperties": False,
                "properties": {"text": _S}}}}},
            "responses": {"201": json_body(ref("TimelineEntry"), "Created"), **errors(400, 404, 422)}}},
        "/api/v1/clients/{id}/merge": {"post": {
            "summary": "Merge card from_id into this one: phones, e-mails, tags, timeline, tasks and "
                       "calls move here; from_id is deleted", "tags": ["clients"], "parameters": [_ID],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["from_id"], "additionalProperties": False,
                "properties": {"from_id": {"type": "integer", "minimum": 1}}}}}},
            "responses": {"200": json_body(ref("Client")), **errors(400, 404, 422)}}},
        "/api/v1/tasks": {"get": {
            "summary": "Tasks (call-backs and hand-made), newest or most urgent first (crm, manager, "
                       "operator: own and the shared group's, admin)", "tags": ["clients"],
            "parameters": [query("client_id", {"type": "integer", "minimum": 1}, ""),
                           query("assignee", {"type": "string", "pattern": "^[0-9]{1,16}$"}, "extension"),
                           query("mine", {"type": "boolean"}, "the caller's own and the group's"),
                           query("status", {"enum": ["open", "closed"]}, ""),
                           query("order", {"enum": ["new", "due"]}, "due = most urgent first"),
                           query("limit", {"type": "integer", "minimum": 1, "maximum": 500}, "")],
            "responses": {"200": json_body({"type": "object", "required": ["items"], "properties": {
                "items": {"type": "array", "items": ref("Task")}}}), **errors(422)}},
            "post": {
            "summary": "A task made by hand on a card", "tags": ["clients"],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["client_id", "title"], "additionalProperties": False,
                "properties": {"client_id": {"type": "integer", "minimum": 1}, "title": _S,
                               "due_at": nullable(ISO_TIME), "assignee": _SN}}}}},
            "responses": {"201": json_body(ref("Task"), "Created"), **errors(400, 404, 422)}}},
        "/api/v1/tasks/{id}/close": {"post": {
            "summary": "Close a task (crm, admin; closing a closed task is harmless)", "tags": ["clients"],
            "parameters": [_ID], "responses": {"200": json_body(ref("Task")), **errors(404)}}},
        "/api/v1/routing/responsible": {"get": {
            "summary": "For the dialplan's CURL(): the responsible operator's extension as text, "
                       "empty when none (crm, admin)", "tags": ["clients"],
            "parameters": [query("number", {"type": "string"}, "the caller's number", required=True)],
            "responses": {"200": {"description": "extension or empty",
                                  "content": {"text/plain": {"schema": {"type": "string"}}}},
                          **errors(422)}}},
    },
    schemas={
        "Client": {"type": "object",
                   "required": ["id", "name", "company", "responsible", "source", "tags", "notes", "phones",
                                "emails", "created_at", "updated_at"],
                   "properties": {"id": {"type": "integer"}, "name": _S, "company": _SN, "responsible": _SN,
                                  "source": _SN, "tags": _STRS, "notes": _SN,
                                  "phones": {"type": "array", "items": _PHONE},
                                  "phone_count": {"type": "integer"}, "emails": _STRS,
                                  "auto_created": {"type": "boolean"}, "created_at": ISO_TIME,
                                  "updated_at": ISO_TIME, "last_activity_at": ISO_TIME}},
        "ClientInput": {"type": "object", "required": ["name"], "additionalProperties": False,
                        "properties": {"name": _S, "company": _SN, "responsible": _SN, "source": _SN,
                                       "tags": _STRS, "notes": _SN, "phones": _STRS, "emails": _STRS}},
        "ClientChanges": {"type": "object", "additionalProperties": False,
                          "properties": {"name": _S, "company": _SN, "responsible": _SN, "source": _SN,
                                         "tags": _STRS, "notes": _SN, "add_phones": _STRS,
                                         "remove_phones": _STRS, "emails": _STRS}},
        "TimelineEntry": {"type": "object", "required": ["id", "kind", "call_id", "payload", "at"],
                          "properties": {"id": {"type": "integer"}, "kind": _S,
                                         "call_id": nullable({"type": "integer"}),
                                         "payload": {"type": "object"}, "at": ISO_TIME}},
        "Task": {"type": "object",
                 "required": ["id", "client_id", "kind", "assignee", "status", "created_at"],
                 "properties": {"id": {"type": "integer"}, "client_id": nullable({"type": "integer"}),
                                "number": _SN, "kind": _S, "assignee": _SN,
                                "status": {"enum": ["open", "closed"]}, "due_at": nullable(ISO_TIME),
                                "created_at": ISO_TIME, "closed_at": nullable(ISO_TIME),
                                "created_by_call_id": nullable({"type": "integer"}),
                                "closed_by_call_id": nullable({"type": "integer"}),
                                "title": _SN, "assignees": _STRS, "client_name": _SN,
                                "created_by": _SN}},
    },
)
