"""Issue 18: every request string and array has a cap, the OpenAPI document states it, and the
server holds every request to it (422 naming the field); hostile ids, cursors and extensions get a
clean 4xx, never a 500 or a traceback in the server's log. Through the bridge as `serve`
assembles it, on a real port, with SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import json
import logging
import time
from typing import Any

import pytest

from pbx_bridge.clients.schemas import MAX_EMAILS, MAX_PHONES, MAX_TAG_LENGTH, MAX_TAGS
from pbx_bridge.web.users import create_user
from tests.api.conftest import Api
from tests.api.seed import insert_call


def _uncapped(schema: Any, where: str, components: dict[str, Any], found: list[str],
              depth: int = 0) -> None:
    """Every string (not an enum or const) needs maxLength, every array maxItems."""
    assert depth < 30, where
    if not isinstance(schema, dict):
        return
    if "$ref" in schema:
        _uncapped(components[schema["$ref"].rsplit("/", 1)[-1]], where, components, found, depth + 1)
        return
    kinds = schema.get("type")
    kinds = set(kinds) if isinstance(kinds, list) else {kinds}
    if "string" in kinds and "enum" not in schema and "const" not in schema and "maxLength" not in schema:
        found.append(f"{where}: string without maxLength")
    if "array" in kinds and "maxItems" not in schema:
        found.append(f"{where}: array without maxItems")
    for key in ("anyOf", "oneOf", "allOf"):
        for i, alternative in enumerate(schema.get(key, [])):
            _uncapped(alternative, f"{where}/{key}{i}", components, found, depth + 1)
    if "items" in schema:
        _uncapped(schema["items"], f"{where}[]", components, found, depth + 1)
    for name, prop in schema.get("properties", {}).items():
        _uncapped(prop, f"{where}.{name}", components, found, depth + 1)


async def _document(api: Api) -> dict[str, Any]:
    resp = await api.client.get("/api/v1/openapi.json", headers=api.auth("crm"))
    assert resp.status == 200
    doc: dict[str, Any] = await resp.json()
    return doc


async def test_every_request_string_and_array_has_a_cap_in_the_document(api: Api) -> None:
    doc = await _document(api)
    components = doc["components"]["schemas"]
    found: list[str] = []
    bodies = 0
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            for param in op.get("parameters", []):
                if param["in"] in ("query", "path"):
                    _uncapped(param["schema"], f"{method.upper()} {path} ?{param['name']}", components, found)
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            if body is not None:
                bodies += 1
                _uncapped(body, f"{method.upper()} {path} body", components, found)
    assert bodies >= 8  # the walk reached the request bodies (cards, tasks, click-to-call, ...)
    assert found == []
    card = components["ClientInput"]["properties"]
    assert card["tags"]["maxItems"] == MAX_TAGS and card["tags"]["items"]["maxLength"] == MAX_TAG_LENGTH
    assert card["phones"]["maxItems"] == MAX_PHONES and card["emails"]["maxItems"] == MAX_EMAILS


def _many(n: int, fmt: str) -> list[str]:
    return [fmt.format(i) for i in range(n)]


OVER_CAP: list[tuple[str, str, dict[str, Any], str]] = [
    ("POST", "/api/v1/clients", {"name": "A", "tags": _many(MAX_TAGS + 1, "t{}")}, "'tags' has 51 items"),
    ("POST", "/api/v1/clients", {"name": "A", "tags": ["x" * (MAX_TAG_LENGTH + 1)]}, "'tags[0]' is longer"),
    ("POST", "/api/v1/clients", {"name": "A", "phones": _many(MAX_PHONES + 1, "+7916555{:04d}")},
     "'phones' has 21 items"),
    ("POST", "/api/v1/clients", {"name": "A", "emails": _many(MAX_EMAILS + 1, "a{}@example.com")},
     "'emails' has 21 items"),
    ("POST", "/api/v1/clients", {"name": "x" * 256}, "'name' is longer than 255"),
    ("POST", "/api/v1/clients", {"name": "A", "company": "x" * 256}, "'company' is longer than 255"),
    ("POST", "/api/v1/clients", {"name": "A", "notes": "x" * 100_001}, "'notes' is longer than 100000"),
    ("PATCH", "/api/v1/clients/{id}", {"add_phones": _many(21, "+7916555{:04d}")}, "'add_phones' has 21"),
    ("PATCH", "/api/v1/clients/{id}", {"remove_phones": ["1" * 65]}, "'remove_phones[0]' is longer"),
    ("PATCH", "/api/v1/clients/{id}", {"source": "s" * 129}, "'source' is longer than 128"),
    ("POST", "/api/v1/clients/{id}/notes", {"text": "n" * 10_001}, "'text' is longer than 10000"),
    ("POST", "/api/v1/tasks", {"client_id": 1, "title": "t" * 256}, "'title' is longer than 255"),
    ("POST", "/api/v1/click-to-call", {"extension": "101", "number": "9" * 65}, "'number' is longer"),
    ("POST", "/api/v1/click-to-call", {"extension": "1" * 17, "number": "+79161234567"},
     "'extension' is longer than 16"),
    ("GET", "/api/v1/clients?cursor=" + "A" * 513, {}, "'cursor' is longer than 512"),
    ("GET", "/api/v1/calls?did=" + "1" * 65, {}, "'did' is longer than 64"),
    ("GET", "/api/v1/click-to-call/" + "a" * 65, {}, "'id' is longer than 64"),
]


@pytest.mark.parametrize(("method", "path", "body", "message"), OVER_CAP,
                         ids=[f"{m} {p[:40]} {msg[:20]}" for m, p, _b, msg in OVER_CAP])
async def test_an_over_cap_request_is_a_clear_422(api: Api, method: str, path: str, body: dict[str, Any],
                                                   message: str) -> None:
    created = await api.client.post("/api/v1/clients", json={"name": "Base"}, headers=api.auth("crm"))
    client_id = (await created.json())["id"]
    kwargs: dict[str, Any] = {"json": body} if method != "GET" else {}
    resp = await api.client.request(method, path.replace("{id}", str(client_id)), headers=api.auth("crm"),
                                    **kwargs)
    assert resp.status == 422, await resp.text()
    error = (await resp.json())["error"]
    assert error["code"] in ("invalid_field", "invalid_parameter") and message in error["message"]


async def test_the_largest_card_the_caps_allow_is_created_quickly(api: Api) -> None:
    body = {"name": "N" * 255, "company": "C" * 255, "source": "S" * 128, "notes": "x" * 100_000,
            "tags": [f"{i:02d}" + "t" * (MAX_TAG_LENGTH - 2) for i in range(MAX_TAGS)],
            "phones": [f"+7916555{i:04d}" for i in range(MAX_PHONES)],
            "emails": [f"{i:02d}" + "e" * 200 + "@example.com" for i in range(MAX_EMAILS)]}
    started = time.perf_counter()
    resp = await api.client.post("/api/v1/clients", json=body, headers=api.auth("crm"))
    assert resp.status == 201, await resp.text()
    assert time.perf_counter() - started < 2.0
    card = await resp.json()
    assert card["tags"] == body["tags"] and len(card["emails"]) == MAX_EMAILS


def _no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    assert "Traceback" not in caplog.text
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records]


def _cursor(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


async def test_a_cursor_with_a_huge_id_is_a_4xx_not_a_500(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with api.runtime.engine.begin() as conn:
        await insert_call(conn)
    huge = _cursor(["2026-11-20T09:00:00+00:00", 10**26])
    for path in ("/api/v1/calls", "/api/v1/clients", "/api/v1/calls/export"):
        resp = await api.client.get(path, params={"cursor": huge}, headers=api.auth("crm"))
        if path.endswith("export"):
            continue  # the export takes no cursor (the filters only): just never a 500
        assert resp.status in (400, 422), (path, resp.status, await resp.text())
        assert "cursor" in (await resp.json())["error"]["message"]
    bool_id = _cursor(["2026-11-20T09:00:00+00:00", True])
    resp = await api.client.get("/api/v1/calls", params={"cursor": bool_id}, headers=api.auth("crm"))
    assert resp.status in (400, 422)
    _no_traceback(caplog)


async def test_ids_and_extensions_are_ascii_digits_only(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with api.runtime.engine.begin() as conn:
        call_id = await insert_call(conn)
    assert call_id < 10
    arabic = "\u0660\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669"[call_id]
    resp = await api.client.get(f"/api/v1/calls/{call_id}", headers=api.auth("crm"))
    assert resp.status == 200
    for path in (f"/api/v1/calls/{arabic}", f"/api/v1/calls/{arabic}/transcript",
                 f"/api/v1/calls/{arabic}/recording"):
        resp = await api.client.get(path, headers=api.auth("crm"))
        assert resp.status in (404, 422), (path, resp.status)
    resp = await api.client.get("/api/v1/calls", params={"operator": "\u0661\u0660\u0661"},
                                headers=api.auth("crm"))
    assert resp.status == 422
    resp = await api.client.get("/api/v1/tasks", params={"assignee": "\u0661\u0660\u0661"},
                                headers=api.auth("crm"))
    assert resp.status == 422
    for limit in ("\u0661\u0660", "1_0", " 10"):
        resp = await api.client.get("/api/v1/calls", params={"limit": limit}, headers=api.auth("crm"))
        assert resp.status == 422, limit
    created = await api.client.post("/api/v1/clients", headers=api.auth("crm"),
                                    json={"name": "A", "responsible": "\u0661\u0660\u0662"})
    assert created.status == 422 and "responsible" in (await created.json())["error"]["message"]
    _no_traceback(caplog)


@pytest.mark.parametrize("extension", ["\u0661\u0660\u0662", "99999", "１０２"])
async def test_click_to_call_refuses_extensions_the_bridge_does_not_know(api: Api, extension: str) -> None:
    resp = await api.client.post("/api/v1/click-to-call", headers=api.auth("crm"),
                                 json={"extension": extension, "number": "+79161234567"})
    assert resp.status == 422, await resp.text()
    assert (await resp.json())["error"]["code"] == "unknown_extension"
    assert api.originates() == []


async def test_click_to_call_accepts_an_extension_of_a_token_or_web_user(api: Api) -> None:
    # 102 is known from the operator102 API token; 555 only once a web user has it.
    resp = await api.client.post("/api/v1/click-to-call", headers=api.auth("crm"),
                                 json={"extension": "102", "number": "+79161234567"})
    assert resp.status == 202, await resp.text()
    resp = await api.client.post("/api/v1/click-to-call", headers=api.auth("crm"),
                                 json={"extension": "555", "number": "+79161234567"})
    assert resp.status == 422
    async with api.runtime.engine.begin() as conn:
        await create_user(conn, username="eve", password="a long enough password", role="operator",
                          extension="555")
    resp = await api.client.post("/api/v1/click-to-call", headers=api.auth("crm"),
                                 json={"extension": "555", "number": "+79161234568"})
    assert resp.status == 202, await resp.text()


async def test_transcript_of_another_operators_call_is_404_like_the_call(api: Api) -> None:
    async with api.runtime.engine.begin() as conn:
        theirs = await insert_call(conn, operator="102", operators_rung=["102"])
    for path in (f"/api/v1/calls/{theirs}", f"/api/v1/calls/{theirs}/transcript",
                 "/api/v1/calls/999999", "/api/v1/calls/999999/transcript"):
        resp = await api.client.get(path, headers=api.auth("operator"))
        assert resp.status == 404, (path, resp.status)
        assert (await resp.json())["error"]["code"] == "not_found"
    resp = await api.client.get(f"/api/v1/calls/{theirs}/transcript", headers=api.auth("operator102"))
    assert resp.status == 200
