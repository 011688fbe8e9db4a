"""Reading request input (JSON bodies, query parameters) into plain values, or 400/422 errors."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from crm_sync.phones import ascii_digits
from pbx_bridge.http.errors import ApiError
from pbx_bridge.http.request_caps import PARSED_BODY


async def json_object(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object; 400 for anything else."""
    if PARSED_BODY in request:
        data = request[PARSED_BODY]
        if not isinstance(data, dict):
            raise ApiError(400, "bad_request", "the body must be a JSON object")
        return data
    try:
        data = await request.json(loads=json.loads)
    except RecursionError:
        # Valid JSON nested thousands deep ({"a": {"a": ...): refused, not a bug.
        raise ApiError(400, "bad_request", "the JSON body is nested too deeply") from None
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
        raise ApiError(400, "bad_request", "the body must be a JSON object") from None
    if not isinstance(data, dict):
        raise ApiError(400, "bad_request", "the body must be a JSON object")
    return data


def check_text(value: str, key: str) -> str:
    """Text a database can store: no NUL character (PostgreSQL refuses it) and valid Unicode
    (JSON may carry a lone surrogate half, which cannot be encoded)."""
    if "\x00" in value:
        raise ApiError(422, "invalid_field", f"'{key}' contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(422, "invalid_field", f"'{key}' is not valid Unicode text") from None
    return value


def field_str(data: dict[str, Any], key: str, *, required: bool = False, max_len: int = 256) -> str | None:
    value = data.get(key)
    if value is None:
        if required:
            raise ApiError(422, "invalid_field", f"'{key}' is required")
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # extensions and numbers are often sent as numbers
    if not isinstance(value, str):
        raise ApiError(422, "invalid_field", f"'{key}' must be a string")
    if len(value) > max_len:
        raise ApiError(422, "invalid_field", f"'{key}' is longer than {max_len} characters")
    if required and not value.strip():
        raise ApiError(422, "invalid_field", f"'{key}' must not be empty")
    return check_text(value, key)


def field_int(data: dict[str, Any], key: str) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**31:
        raise ApiError(422, "invalid_field", f"'{key}' must be a positive integer")
    return value


def query_time(request: web.Request, key: str) -> datetime | None:
    raw = request.query.get(key)
    if raw is None or raw == "":
        return None
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00").replace(" ", "+"))
    except ValueError:
        raise ApiError(422, "invalid_parameter",
                       f"'{key}' must be an ISO 8601 time such as 2026-11-26T10:00:00Z") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)  # times without a zone are UTC
    return value.astimezone(UTC)


def query_int(request: web.Request, key: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(key)
    if raw is None or raw == "":
        return default
    digits = raw[1:] if raw[:1] == "-" else raw
    # int() alone would take " 5", "5_000" and other scripts' digits ("١٠").
    if not ascii_digits(digits) or len(digits) > 18:
        raise ApiError(422, "invalid_parameter", f"'{key}' must be an integer")
    value = int(raw)
    if not low <= value <= high:
        raise ApiError(422, "invalid_parameter", f"'{key}' must be between {low} and {high}")
    return value


def query_bool(request: web.Request, key: str) -> bool | None:
    raw = request.query.get(key)
    if raw is None or raw == "":
        return None
    if raw.lower() in ("true", "1", "yes"):
        return True
    if raw.lower() in ("false", "0", "no"):
        return False
    raise ApiError(422, "invalid_parameter", f"'{key}' must be true or false")


def query_choice(request: web.Request, key: str, choices: tuple[str, ...]) -> str | None:
    raw = request.query.get(key)
    if raw is None or raw == "":
        return None
    if raw not in choices:
        raise ApiError(422, "invalid_parameter", f"'{key}' must be one of {', '.join(choices)}")
    return raw


def path_id(request: web.Request, what: str, key: str = "id") -> int:
    """A database id from the URL path; anything that cannot be one (not digits, 0, beyond the
    32-bit range PostgreSQL's INTEGER holds) is simply not found."""
    raw = request.match_info[key]
    if not ascii_digits(raw) or len(raw) > 10 or not 0 < int(raw) < 2**31:
        raise ApiError(404, "not_found", f"no such {what}")
    return int(raw)
