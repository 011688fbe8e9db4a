"""OpenAPI fragment of live events (the WebSocket / SSE endpoint and the message shape)."""

from __future__ import annotations

from pbx_bridge.events.messages import TYPES
from pbx_bridge.http.openapi import ISO_TIME, Fragment, errors, query, text

OPENAPI = Fragment(
    paths={"/api/v1/events": {"get": {
        "summary": "Live events: WebSocket, or Server-Sent Events with Accept: text/event-stream "
                   "(manager, operator: own extension, admin). Browsers may pass ?access_token=.",
        "tags": ["events"],
        "parameters": [query("types", text(1024), "comma-separated event types to receive"),
                       query("access_token", text(256), "the token, when headers cannot be set")],
        "responses": {
            "101": {"description": "WebSocket: one JSON LiveEvent per text message"},
            "200": {"description": "SSE: `data: <LiveEvent JSON>` frames",
                    "content": {"text/event-stream": {"schema": {"type": "string"}}}},
            **errors(406, 422)}}}},
    schemas={"LiveEvent": {
        "type": "object", "required": ["type", "at"],
        "properties": {"type": {"enum": ["ready", *TYPES]}, "at": ISO_TIME,
                       "extensions": {"type": "array", "items": {"type": "string"}},
                       "call": {"$ref": "#/components/schemas/CallRecord"},
                       "extension": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                       "client": {"anyOf": [{"type": "object"}, {"type": "null"}]},
                       "backfilled": {"type": "boolean",
                                      "description": "call.ended / call.missed of a call rebuilt "
                                                     "from CEL after it was over"},
                       "click_to_call": {"$ref": "#/components/schemas/ClickToCall"}}}},
)
