"""OpenAPI fragment of the recordings feature's endpoints (pbx_bridge/recording/http.py), written
by the API feature so /api/v1/openapi.json covers every route. Wire it in pbx_bridge/http/app.py:
`(recording_http.setup, recording_openapi.OPENAPI)`."""

from __future__ import annotations

from pbx_bridge.http.openapi import Fragment, errors, json_body, path_param

_ID = path_param("id", {"type": "integer", "minimum": 1})
_AUDIO = {"description": "The recording (audio/wav); 206 for a Range request",
          "content": {"audio/wav": {"schema": {"type": "string", "format": "binary"}}}}
_RANGE_ERR = {"description": "Range not satisfiable",
              "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}

OPENAPI = Fragment(
    paths={
        "/api/v1/calls/{id}/recording": {"get": {
            "summary": "Play a call's recording, Range supported (crm, manager, operator: own, admin)",
            "tags": ["recordings"], "parameters": [_ID],
            "responses": {"200": _AUDIO, "206": _AUDIO, "416": _RANGE_ERR, **errors(404, 409)}}},
        "/api/v1/calls/{id}/recording/link": {"post": {
            "summary": "A signed, expiring link to the recording, for a CRM (crm, manager, operator: own)",
            "tags": ["recordings"], "parameters": [_ID],
            "responses": {"201": json_body({"type": "object", "required": ["url", "expires_at"],
                                            "properties": {"url": {"type": "string"},
                                                           "expires_at": {"type": "string"}}},
                                           "Created"), **errors(404, 409)}}},
        "/api/v1/recordings/signed/{token}": {"get": {
            "summary": "Play through a signed link (no bearer token: the signature is the credential)",
            "tags": ["recordings"], "security": [],
            "parameters": [path_param("token", {"type": "string", "pattern": "^[0-9A-Za-z._-]+$"})],
            "responses": {"200": _AUDIO, "206": _AUDIO, "416": _RANGE_ERR,
                          "403": json_body({"$ref": "#/components/schemas/Error"}, "Bad signature"),
                          "404": json_body({"$ref": "#/components/schemas/Error"}, "Not found"),
                          "410": json_body({"$ref": "#/components/schemas/Error"}, "Link expired")}}},
        "/api/v1/calls/{id}/legal-hold": {"post": {
            "summary": "Keep a call's recording past retention (manager, admin)", "tags": ["recordings"],
            "parameters": [_ID],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["hold"], "additionalProperties": False,
                "properties": {"hold": {"type": "boolean"}}}}}},
            "responses": {"200": json_body({"type": "object", "required": ["call_id", "legal_hold"],
                                            "properties": {"call_id": {"type": "integer"},
                                                           "legal_hold": {"type": "boolean"}}}),
                          **errors(400, 404)}}},
    },
)
