"""OpenAPI description of the recordings endpoints, as plain data.

The API feature's `pbx_bridge.http.openapi.Fragment(paths=..., schemas=...)` takes these two
dicts as they are (`Fragment(paths=OPENAPI_PATHS, schemas=OPENAPI_SCHEMAS)`); "Error" is the
document's common error schema.
"""

from __future__ import annotations

from typing import Any

_ERROR = {"$ref": "#/components/schemas/Error"}
_STR_OR_NULL = {"anyOf": [{"type": "string"}, {"type": "null"}]}
_NUM_OR_NULL = {"anyOf": [{"type": "number"}, {"type": "null"}]}
_INT_OR_NULL = {"anyOf": [{"type": "integer"}, {"type": "null"}]}
_TIME = {"type": "string", "format": "date-time"}
_TIME_OR_NULL = {"anyOf": [_TIME, {"type": "null"}]}
_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {400: "Malformed request", 401: "Missing, invalid or revoked token",
            403: "Not allowed (role, or a bad link signature)", 404: "No such call or recording",
            409: "The recording is still being made or converted (see Retry-After)",
            410: "Deleted by retention, or the link has expired",
            416: "Range not satisfiable (Content-Range: bytes */size)",
            503: "Recordings are not enabled"}
    return {str(c): {"description": text[c], "content": {"application/json": {"schema": _ERROR}}}
            for c in sorted(codes)}


_RANGE_HEADER = {"name": "Range", "in": "header", "required": False, "schema": {"type": "string"},
                 "description": "bytes=first-last, bytes=first-, or bytes=-suffix (one range)"}
_AUDIO = {
    "200": {"description": "The whole WAV (stereo 8 kHz 16-bit: left operator, right customer)",
            "content": {"audio/wav": {"schema": {"type": "string", "format": "binary"}}}},
    "206": {"description": "The requested range (Content-Range)",
            "content": {"audio/wav": {"schema": {"type": "string", "format": "binary"}}}},
}

OPENAPI_PATHS: dict[str, Any] = {
    "/api/v1/calls/{id}/recording": {"get": {
        "summary": "Play a call's recording, with Range (admin, manager, crm, operator: own calls)",
        "tags": ["recordings"], "parameters": [_ID, _RANGE_HEADER],
        "responses": {**_AUDIO, **_errors(401, 403, 404, 409, 410, 416)}}},
    "/api/v1/calls/{id}/recording/link": {"post": {
        "summary": "A signed, expiring URL to the recording, for a CRM that cannot send headers",
        "tags": ["recordings"], "parameters": [_ID],
        "responses": {"201": {"description": "The link", "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/RecordingLink"}}}},
            **_errors(401, 403, 404, 409, 410)}}},
    "/api/v1/recordings/signed/{token}": {"get": {
        "summary": "Play a recording by signed link (no token: the signature is the credential)",
        "tags": ["recordings"], "security": [],
        "parameters": [{"name": "token", "in": "path", "required": True,
                        "schema": {"type": "string", "maxLength": 76,
                                   "pattern": "^[1-9][0-9]{0,18}\\.[1-9][0-9]{0,11}\\.[A-Za-z0-9_-]{43}$"}},
                       _RANGE_HEADER],
        "responses": {**_AUDIO, **_errors(403, 404, 409, 410, 416)}}},
    "/api/v1/calls/{id}/legal-hold": {"post": {
        "summary": "Put a call under legal hold (its recording survives retention) or lift it",
        "tags": ["recordings"], "parameters": [_ID],
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "required": ["hold"], "additionalProperties": False,
            "properties": {"hold": {"type": "boolean"}}}}}},
        "responses": {"200": {"description": "The call's hold", "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/LegalHold"}}}},
            **_errors(400, 401, 403, 404)}}},
}

OPENAPI_SCHEMAS: dict[str, Any] = {
    "Recording": {
        "type": "object",
        "required": ["id", "call_id", "state", "format", "channels", "sample_rate", "duration_seconds",
                     "size_bytes", "sha256", "compressed", "segments", "attempts", "last_error",
                     "created_at", "ready_at", "deleted_at", "url"],
        "properties": {
            "id": {"type": "integer"}, "call_id": {"type": "integer"},
            "state": {"enum": ["recording", "processing", "ready", "missing", "truncated", "failed",
                               "deleted"]},
            "format": _STR_OR_NULL, "channels": _INT_OR_NULL, "sample_rate": _INT_OR_NULL,
            "duration_seconds": _NUM_OR_NULL, "size_bytes": _INT_OR_NULL, "sha256": _STR_OR_NULL,
            "compressed": {"type": "boolean"}, "segments": {"type": "integer"},
            "attempts": {"type": "integer"}, "last_error": _STR_OR_NULL, "created_at": _TIME,
            "ready_at": _TIME_OR_NULL, "deleted_at": _TIME_OR_NULL, "url": {"type": "string"},
        },
    },
    "RecordingLink": {"type": "object", "required": ["url", "expires_at"], "additionalProperties": False,
                      "properties": {"url": {"type": "string"}, "expires_at": _TIME}},
    "LegalHold": {"type": "object", "required": ["call_id", "legal_hold"], "additionalProperties": False,
                  "properties": {"call_id": {"type": "integer"}, "legal_hold": {"type": "boolean"}}},
}
