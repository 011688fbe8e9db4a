"""OpenAPI fragment of click-to-call."""

from __future__ import annotations

from pbx_bridge.click_to_call.service import REASONS, STATES
from pbx_bridge.http.openapi import (
    EXTENSION,
    ISO_TIME,
    Fragment,
    errors,
    json_body,
    nullable,
    path_param,
    ref,
    text,
)

OPENAPI = Fragment(
    paths={
        "/api/v1/click-to-call": {"post": {
            "summary": "Call a number from an operator's phone (crm, operator: own extension, admin)",
            "tags": ["click-to-call"],
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": ref("ClickToCallRequest")}}},
            "responses": {
                "202": json_body(ref("ClickToCall"), "Accepted: the PBX is dialling the operator"),
                "200": json_body(ref("ClickToCall"), "The same idempotency_key: the earlier request"),
                **errors(400, 409, 422, 429, 503)}}},
        "/api/v1/click-to-call/{id}": {"get": {
            "summary": "A click-to-call request's state (crm, manager, operator: own, admin)",
            "tags": ["click-to-call"],
            "parameters": [path_param("id", text(64))],
            "responses": {"200": json_body(ref("ClickToCall")), **errors(404)}}},
    },
    schemas={
        "ClickToCallRequest": {
            "type": "object", "required": ["extension", "number"],
            "properties": {
                "extension": {**EXTENSION, "description": "the operator's extension, rung first: one "
                              "in click_to_call.extensions, or (that list empty) of a web user, an "
                              "API token, crm.kommo.users or the demo simulator",
                              "examples": ["101"]},
                "number": text(64, description="any human format",
                               examples=["8 (916) 555-01-01", "+7 916 5550101"]),
                "client_id": {"type": "integer", "minimum": 1},
                "idempotency_key": {"type": "string", "maxLength": 128,
                                    "description": "the same key twice returns the same request"},
            }},
        "ClickToCall": {
            "type": "object", "additionalProperties": False,
            "required": ["id", "state", "reason", "extension", "number", "dial", "client_id", "pbx",
                         "call_id", "idempotency_key", "created_at", "updated_at"],
            "properties": {
                "id": {"type": "string"}, "state": {"enum": list(STATES)},
                "reason": nullable({"enum": list(REASONS)}),
                "extension": {"type": "string"}, "number": {"type": "string", "description": "E.164"},
                "dial": {"type": "string", "description": "what the PBX dials"},
                "client_id": nullable({"type": "integer"}), "pbx": {"type": "string"},
                "call_id": nullable({"type": "integer"}),
                "idempotency_key": nullable({"type": "string"}),
                "created_at": ISO_TIME, "updated_at": ISO_TIME,
            }},
    },
)
