"""OpenAPI description of GET /api/v1/calls/{id}/transcript, as plain JSON Schema data (paths and
component schemas), for the API document; errors use the shared `Error` schema."""

from __future__ import annotations

from typing import Any

_ERROR = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
_TIME = {"type": "string", "format": "date-time"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


PATHS: dict[str, Any] = {
    "/api/v1/calls/{id}/transcript": {"get": {
        "summary": "The call's transcript and its transcription job's state (manager, crm, admin; "
                   "operators their own calls)",
        "tags": ["transcription"],
        "parameters": [{"name": "id", "in": "path", "required": True,
                        "schema": {"type": "integer", "minimum": 1,
                                                   "maximum": 2**31 - 1}}],
        "responses": {
            "200": {"description": "OK", "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/CallTranscript"}}}},
            "401": {"description": "Missing, invalid or revoked token", **_ERROR},
            "403": {"description": "The token's role may not do this", **_ERROR},
            "404": {"description": "No such call", **_ERROR},
        },
    }},
}

SCHEMAS: dict[str, Any] = {
    "TranscriptionJob": {
        "type": "object",
        "required": ["id", "call_id", "state", "attempts", "last_error", "created_at", "started_at",
                     "finished_at", "next_attempt_at"],
        "properties": {
            "id": {"type": "integer"}, "call_id": {"type": "integer"},
            "state": {"enum": ["queued", "running", "done", "failed"]},
            "attempts": {"type": "integer"}, "last_error": _nullable({"type": "string"}),
            "created_at": _TIME, "started_at": _nullable(_TIME), "finished_at": _nullable(_TIME),
            "next_attempt_at": _TIME,
        },
    },
    "TranscriptWord": {
        "type": "object", "required": ["word", "start", "end", "conf"],
        "properties": {"word": {"type": "string"}, "start": {"type": "number"},
                       "end": {"type": "number"}, "conf": {"type": "number"}},
    },
    "TranscriptTurn": {
        "type": "object", "required": ["speaker", "start", "end", "text", "words"],
        "properties": {"speaker": {"enum": ["operator", "customer", "speaker"]},
                       "start": {"type": "number"}, "end": {"type": "number"},
                       "text": {"type": "string"},
                       "words": {"type": "array", "items": {"$ref": "#/components/schemas/TranscriptWord"}}},
    },
    "Transcript": {
        "type": "object",
        "required": ["call_id", "language", "model", "duration_seconds", "created_at", "turns", "text",
                     "analytics"],
        "properties": {
            "call_id": {"type": "integer"}, "language": {"type": "string"}, "model": {"type": "string"},
            "duration_seconds": {"type": "number"}, "created_at": _TIME,
            "turns": {"type": "array", "items": {"$ref": "#/components/schemas/TranscriptTurn"}},
            "text": {"type": "string"},
            "analytics": {"type": "object", "description": "talk_seconds, silence_seconds, "
                          "overlap_seconds, interruptions, words, words_per_minute, keyword_hits, "
                          "flagged_hits, required_phrases, tags"},
        },
    },
    "CallTranscript": {
        "type": "object", "required": ["call_id", "job", "transcript"],
        "properties": {
            "call_id": {"type": "integer"},
            "job": _nullable({"$ref": "#/components/schemas/TranscriptionJob"}),
            "transcript": _nullable({"$ref": "#/components/schemas/Transcript"}),
        },
    },
}
