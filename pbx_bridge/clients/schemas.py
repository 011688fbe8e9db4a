"""OpenAPI fragment of client cards, tasks and the dialplan's routing endpoint."""

from __future__ import annotations

from crm_sync.cards import MAX_NAME_LENGTH
from crm_sync.tasks import MAX_TITLE
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
    texts,
)

# The card API's caps (README, "Client cards"): a request carries at most this many tags, phone
# numbers and e-mails. They keep one request's work small (issue 18: 25,000 tags froze the
# server); a card may hold more phones from imports and merges, added MAX_PHONES at a time.
MAX_TAGS = 50
MAX_TAG_LENGTH = 64
MAX_PHONES = 20
MAX_PHONE_LENGTH = 64
MAX_EMAILS = 20
MAX_EMAIL_LENGTH = 255
MAX_COMPANY_LENGTH = 255
MAX_SOURCE_LENGTH = 128
MAX_NOTES_LENGTH = 100_000  # the card's notes field (crm_sync's own limit)
MAX_NOTE_LENGTH = 10_000  # one note on the timeline
MAX_CURSOR_LENGTH = 512

_CARD_STRINGS = {
    "name": text(MAX_NAME_LENGTH), "company": nullable(text(MAX_COMPANY_LENGTH)),
    "responsible": nullable(EXTENSION), "source": nullable(text(MAX_SOURCE_LENGTH)),
    "tags": texts(MAX_TAGS, MAX_TAG_LENGTH), "notes": nullable(text(MAX_NOTES_LENGTH)),
    "emails": texts(MAX_EMAILS, MAX_EMAIL_LENGTH),
}

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
                    "parameters": [query("q", text(255), "phone, digits or name"),
                                   query("responsible", text(16),
                                         "extension; empty = cards without one"),
                                   query("source", text(MAX_SOURCE_LENGTH), "ad channel; empty = none"),
                                   query("limit", {"type": "integer", "minimum": 1, "maximum": 200}, ""),
                                   query("cursor", text(MAX_CURSOR_LENGTH),
                                         "next_cursor of the previous page")],
                    "responses": {"200": json_body({"type": "object", "required": ["items", "next_cursor"],
                                                    "properties": {
                        "items": {"type": "array", "items": ref("Client")},
                        "next_cursor": _SN}}), **errors(422)}},
            "post": {"summary": "Create a card (crm, manager, operator: responsible only themselves or "
                                "nobody, admin)", "tags": ["clients"],
                     "requestBody": {"required": True, "content": {"application/json": {
                         "schema": ref("ClientInput")}}},
                     "responses": {"201": json_body(ref("Client"), "Created"), **errors(400, 422)}},
        },
        "/api/v1/clients/{id}": {
            "get": {"summary": "One card (crm, manager, admin; operator: cards they are responsible "
                               "for, with no responsible, or a call of theirs touched; else 404)",
                    "tags": ["clients"], "parameters": [_ID],
                    "responses": {"200": json_body(ref("Client")), **errors(404)}},
            "patch": {"summary": "Change a card (crm, manager, admin; operator: the cards they may "
                                 "read, never `responsible`: 403 forbidden_responsible)",
                      "tags": ["clients"], "parameters": [_ID],
                      "requestBody": {"required": True, "content": {"application/json": {
                          "schema": ref("ClientChanges")}}},
                      "responses": {"200": json_body(ref("Client")), **errors(400, 404, 422)}},
        },
        "/api/v1/clients/{id}/timeline": {"get": {
            "summary": "A card's calls, tasks and notes, newest first (crm, manager, admin; operator: "
                       "their own calls only)",
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
                "properties": {"text": text(MAX_NOTE_LENGTH)}}}}},
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
                           query("assignee", EXTENSION, "extension"),
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
                "properties": {"client_id": {"type": "integer", "minimum": 1}, "title": text(MAX_TITLE),
                               "due_at": nullable(ISO_TIME), "assignee": nullable(EXTENSION)}}}}},
            "responses": {"201": json_body(ref("Task"), "Created"), **errors(400, 404, 422)}}},
        "/api/v1/tasks/{id}/close": {"post": {
            "summary": "Close a task (crm, admin, operator: their own and the shared group's; not "
                       "manager; closing a closed task is harmless)", "tags": ["clients"],
            "parameters": [_ID], "responses": {"200": json_body(ref("Task")), **errors(404)}}},
        "/api/v1/routing/responsible": {"get": {
            "summary": "For the dialplan's CURL(): the responsible operator's extension as text, "
                       "empty when none (crm, admin)", "tags": ["clients"],
            "parameters": [query("number", text(64), "the caller's number", required=True)],
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
                        "properties": {**_CARD_STRINGS, "phones": texts(MAX_PHONES, MAX_PHONE_LENGTH)}},
        "ClientChanges": {"type": "object", "additionalProperties": False,
                          "properties": {**_CARD_STRINGS,
                                         "add_phones": texts(MAX_PHONES, MAX_PHONE_LENGTH),
                                         "remove_phones": texts(MAX_PHONES, MAX_PHONE_LENGTH)}},
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
