"""Every request's size caps, enforced from the OpenAPI document itself: each string's
`maxLength` and each array's `maxItems` in a query or path parameter and in a JSON request body.

One source of truth: the document a client reads is the rule the server applies, so they cannot
drift apart (tests/api/test_request_caps.py fails on any request string or array without a cap).
Only the caps are checked here; types and meanings stay with the handlers, which give their own
422s. Runs after the auth middleware (no body is parsed for an unauthenticated caller) and after
the body is read under its time limit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from pbx_bridge.http.errors import ApiError, Handler

Schema = dict[str, Any]


@dataclass(frozen=True)
class Caps:
    parameters: dict[str, Schema]  # query and path parameters by name
    body: Schema | None  # the JSON request body's schema, $refs resolved


def _resolve(schema: Any, components: dict[str, Schema], depth: int = 0) -> Any:
    """The schema with every $ref replaced by its target (the request schemas are not recursive;
    the depth bound only guards against a mistake in the document)."""
    if depth > 20:
        raise ValueError("OpenAPI request schema nested too deeply (a recursive $ref?)")
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str):
            return _resolve(components[ref.rsplit("/", 1)[-1]], components, depth + 1)
        return {k: _resolve(v, components, depth + 1) for k, v in schema.items()}
    if isinstance(schema, list):
        return [_resolve(v, components, depth + 1) for v in schema]
    return schema


def index(document: dict[str, Any]) -> dict[tuple[str, str], Caps]:
    """(METHOD, path template) -> its caps, from the assembled document."""
    components = document.get("components", {}).get("schemas", {})
    out: dict[tuple[str, str], Caps] = {}
    for path, operations in document["paths"].items():
        for method, op in operations.items():
            params = {p["name"]: _resolve(p.get("schema", {}), components)
                      for p in op.get("parameters", []) if p.get("in") in ("query", "path")}
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            out[(method.upper(), path)] = Caps(params, _resolve(body, components) if body else None)
    return out


def _alternatives(schema: Schema) -> list[Schema]:
    return [s for s in schema.get("anyOf", []) + schema.get("oneOf", []) if isinstance(s, dict)]


def check(value: Any, schema: Schema, where: str) -> str | None:
    """Why the value breaks a cap of the schema, or None."""
    for alternative in _alternatives(schema):
        if _kind_matches(value, alternative):
            return check(value, alternative, where)
    if isinstance(value, str):
        limit = schema.get("maxLength")
        if isinstance(limit, int) and len(value) > limit:
            return f"'{where}' is longer than {limit} characters"
    elif isinstance(value, list):
        limit = schema.get("maxItems")
        if isinstance(limit, int) and len(value) > limit:
            return f"'{where}' has {len(value)} items, at most {limit} are allowed"
        items = schema.get("items")
        if isinstance(items, dict):
            for i, item in enumerate(value):
                problem = check(item, items, f"{where}[{i}]")
                if problem:
                    return problem
    elif isinstance(value, dict):
        properties = schema.get("properties", {})
        for key, item in value.items():
            if key in properties:
                problem = check(item, properties[key], f"{where}.{key}" if where else key)
                if problem:
                    return problem
    return None


def _kind_matches(value: Any, schema: Schema) -> bool:
    kind = schema.get("type")
    return (kind == "string" and isinstance(value, str)) or (kind == "array" and isinstance(value, list)) \
        or (kind == "object" and isinstance(value, dict))


CAPS: web.AppKey[dict[tuple[str, str], Caps]] = web.AppKey("request_caps", dict)
# The body as parsed here, for pbx_bridge.http.params.json_object: a 100 KB card is parsed once.
PARSED_BODY: web.RequestKey[object] = web.RequestKey("parsed_body", object)


@web.middleware
async def request_caps_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    route = request.match_info.route
    template = route.resource.canonical if route.resource is not None else None
    caps = request.app[CAPS].get((request.method, template)) if template else None
    if caps is None:
        return await handler(request)
    for name, schema in caps.parameters.items():
        values = request.query.getall(name, []) if name not in request.match_info else \
            [request.match_info[name]]
        for raw in values:
            problem = check(raw, schema, name)
            if problem:
                raise ApiError(422, "invalid_parameter", problem)
    if caps.body is not None and request.body_exists:
        try:
            data = json.loads(await request.read())
        except (RecursionError, ValueError):
            data = None  # not JSON: the handler says so (400)
        else:
            request[PARSED_BODY] = data
        problem = check(data, caps.body, "") if data is not None else None
        if problem:
            raise ApiError(422, "invalid_field", problem)
    return await handler(request)
