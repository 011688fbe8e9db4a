"""The OpenAPI 3 document, assembled from each feature's fragment (paths + schemas).

Features describe their endpoints next to their handlers (`<feature>/schemas.py`, an
`OPENAPI` Fragment); pbx_bridge.server.app passes them here. tests/api check real responses
against this document, so it stays true.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from pbx_bridge import __version__

Schema = dict[str, Any]


@dataclass
class Fragment:
    paths: dict[str, Any] = field(default_factory=dict)
    schemas: dict[str, Schema] = field(default_factory=dict)


ERROR_TEXT = {400: "Malformed request", 401: "Missing, invalid or revoked token",
              403: "The token's role may not do this", 404: "Not found", 406: "Not acceptable",
              409: "Conflict", 422: "Invalid input (the message says which and why)",
              429: "Rate limited (see Retry-After)", 503: "Unavailable (see Retry-After)"}


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def json_body(schema: Schema, description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def errors(*codes: int) -> dict[str, Any]:
    """Error responses: always 401 and 403 (every endpoint needs a token), plus `codes`."""
    return {str(c): json_body(ref("Error"), ERROR_TEXT[c]) for c in sorted({401, 403, *codes})}


def nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def query(name: str, schema: Schema, description: str, required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "schema": schema,
            "description": description}


def path_param(name: str, schema: Schema) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema}


ISO_TIME: Schema = {"type": "string", "format": "date-time", "maxLength": 64}
# Digits 0-9 only (not other scripts' digits), as the handlers parse extensions.
EXTENSION: Schema = {"type": "string", "pattern": "^[0-9]{1,16}$", "maxLength": 16}


def text(max_length: int, **extra: Any) -> Schema:
    """A request string with its cap (every request string has one: pbx_bridge.http.request_caps
    enforces it from this document)."""
    return {"type": "string", "maxLength": max_length, **extra}


def texts(max_items: int, max_length: int) -> Schema:
    return {"type": "array", "maxItems": max_items, "items": text(max_length)}

COMMON_SCHEMAS: dict[str, Schema] = {
    "Error": {
        "type": "object", "required": ["error"], "additionalProperties": False,
        "properties": {"error": {
            "type": "object", "required": ["code", "message"], "additionalProperties": False,
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}},
    },
}

OPS = Fragment(
    paths={
        "/healthz": {"get": {
            "summary": "Process is up (no token needed)", "security": [], "tags": ["operations"],
            "responses": {"200": json_body({"type": "object", "required": ["status"],
                                            "properties": {"status": {"const": "ok"}}})}}},
        "/healthz/active": {"get": {
            "summary": "This bridge acts (alone, or the active one among standbys): 200; a "
                       "standby: 503 (for a load balancer; no token needed)",
            "security": [], "tags": ["operations"],
            "responses": {
                "200": json_body({"type": "object", "required": ["role"],
                                  "properties": {"role": {"enum": ["alone", "active"]}}}),
                "503": json_body({"type": "object", "required": ["role"],
                                  "properties": {"role": {"const": "standby"}}}, "A standby")}}},
        "/readyz": {"get": {
            "summary": "Ready: the database and every PBX connection (manager, admin); also this "
                       "bridge's role and each PBX's CEL source",
            "tags": ["operations"],
            "responses": {"200": json_body(ref("Ready")),
                          "503": json_body(ref("Ready"), "Not ready"), **errors()}}},
        "/metrics": {"get": {
            "summary": "Prometheus metrics (manager, admin)", "tags": ["operations"],
            "responses": {"200": {"description": "Prometheus text format",
                                  "content": {"text/plain": {"schema": {"type": "string"}}}},
                          **errors()}}},
        "/api/v1/openapi.json": {"get": {
            "summary": "This document (any role)", "tags": ["operations"],
            "responses": {"200": json_body({"type": "object"}), **errors()}}},
    },
    schemas={"Ready": {
        "type": "object", "required": ["status", "checks", "role", "cel"],
        "properties": {"status": {"enum": ["ready", "not_ready"]},
                       "checks": {"type": "object", "additionalProperties": {"type": "string"}},
                       "role": {"enum": ["alone", "active", "standby"]},
                       "standby": {"type": "object"},
                       "cel": {"type": "object", "additionalProperties": {
                           "type": "object",
                           "properties": {"state": {"enum": ["idle", "ok", "down", "misconfigured"]},
                                          "error": {"type": ["string", "null"]},
                                          "backfill_lag_seconds": {"type": ["number", "null"]}}}},
                       "transcription": {
                           "type": "object", "required": ["model", "language", "warning"],
                           "properties": {
                               "model": {"type": ["string", "null"]},
                               "language": {"type": ["string", "null"]},
                               "region_languages": {"type": "array", "items": {"type": "string"}},
                               "warning": {"enum": [None, "no_model", "language_mismatch"]}}}}}},
)


def document(fragments: list[Fragment]) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    schemas: dict[str, Schema] = dict(COMMON_SCHEMAS)
    for fragment in [OPS, *fragments]:
        for path, ops in fragment.paths.items():
            paths.setdefault(path, {}).update(ops)
        schemas.update(fragment.schemas)
    return {
        "openapi": "3.1.0",
        "info": {"title": "pbx-bridge API", "version": __version__,
                 "description": "Asterisk to CRM bridge. Every endpoint but /healthz needs "
                                "`Authorization: Bearer <token>` (pbx-bridge tokens create). "
                                "Errors: {\"error\": {\"code\", \"message\"}}."},
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": dict(sorted(paths.items())),
        "components": {"schemas": schemas,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }


OPENAPI_DOC: web.AppKey[dict[str, Any]] = web.AppKey("openapi", dict)


async def openapi_handler(request: web.Request) -> web.Response:
    from pbx_bridge.http.auth import principal

    principal(request)  # any role
    return web.json_response(request.app[OPENAPI_DOC])
