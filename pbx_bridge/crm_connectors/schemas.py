"""OpenAPI fragment of the native connectors' API endpoint (Kommo click-to-call). Bitrix24's
event handler (`/hooks/bitrix24`) is outside the API: Bitrix24 calls it, with its own credential."""

from __future__ import annotations

from pbx_bridge.http.openapi import Fragment, errors, json_body, ref, text

OPENAPI = Fragment(
    paths={
        "/api/v1/crm/kommo/click-to-call": {"post": {
            "summary": "Call a number from a Kommo user's phone: the user's extension from "
                       "[crm.kommo.users] (crm, admin; 404 when the Kommo connector is off)",
            "tags": ["click-to-call"],
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": ref("KommoClickToCallRequest")}}},
            "responses": {
                "202": json_body(ref("ClickToCall"), "Accepted: the PBX is dialling the operator"),
                "200": json_body(ref("ClickToCall"), "The same idempotency_key: the earlier request"),
                **errors(400, 404, 409, 422, 503)}}},
    },
    schemas={
        "KommoClickToCallRequest": {
            "type": "object", "required": ["user_id", "phone"],
            "properties": {
                "user_id": {"type": "integer", "description": "the Kommo user placing the call"},
                "phone": text(64, description="any human format", examples=["8 (916) 555-01-01"]),
                "idempotency_key": {"type": "string", "maxLength": 128},
            }},
    },
)
