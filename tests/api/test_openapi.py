"""The OpenAPI document is true: real responses validate against it, every route is in it,
and schemathesis finds no 5xx."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest

from pbx_bridge.auth.middleware import guarded
from tests.api.conftest import Api
from tests.api.seed import insert_call


def _validator(doc: dict[str, Any], schema: dict[str, Any]) -> Any:
    root = {**schema, "components": doc["components"]}
    return jsonschema_rs.Draft202012Validator(root)


def check(doc: dict[str, Any], method: str, template: str, status: int, content_type: str,
          body: bytes) -> None:
    operation = doc["paths"][template][method.lower()]
    assert str(status) in operation["responses"], f"{method} {template}: {status} not documented"
    content = operation["responses"][str(status)].get("content", {})
    assert content_type in content, f"{method} {template} {status}: {content_type} not documented"
    if content_type == "application/json":
        errors = list(_validator(doc, content[content_type]["schema"]).iter_errors(json.loads(body)))
        assert errors == [], f"{method} {template} {status}: {[str(e) for e in errors]}"


async def test_real_responses_match_the_document(api: Api) -> None:
    async with api.runtime.engine.begin() as conn:
        call_id = await insert_call(conn, legs=[{"extension": "101"}], transfers=[
            {"kind": "blind", "at": "2026-11-20T09:00:10.000Z", "from_operator": "101",
             "to_operator": "102"}])
        await insert_call(conn, minutes=3, status=None)
    resp = await api.client.get("/api/v1/openapi.json", headers=api.auth("operator"))
    doc = await resp.json()
    posted = await api.client.post("/api/v1/click-to-call", headers=api.auth("crm"),
                                   json={"extension": "101", "number": "89161234567"})
    c2c_id = (await posted.json())["id"]
    cases: list[tuple[str, str, str, dict[str, Any], str]] = [
        ("GET", "/healthz", "/healthz", {}, ""),
        ("GET", "/readyz", "/readyz", {}, "manager"),
        ("GET", "/metrics", "/metrics", {}, "manager"),
        ("GET", "/api/v1/openapi.json", "/api/v1/openapi.json", {}, "crm"),
        ("GET", "/api/v1/calls", "/api/v1/calls", {"params": {"limit": "1"}}, "crm"),
        ("GET", "/api/v1/calls", "/api/v1/calls", {"params": {"number": "x"}}, "crm"),
        ("GET", "/api/v1/calls", "/api/v1/calls", {}, ""),
        ("GET", f"/api/v1/calls/{call_id}", "/api/v1/calls/{id}", {}, "manager"),
        ("GET", "/api/v1/calls/777", "/api/v1/calls/{id}", {}, "manager"),
        ("POST", "/api/v1/click-to-call", "/api/v1/click-to-call",
         {"json": {"extension": "101", "number": "89161234567"}}, "crm"),
        ("POST", "/api/v1/click-to-call", "/api/v1/click-to-call",
         {"json": {"extension": "101", "number": "1"}}, "crm"),
        ("POST", "/api/v1/click-to-call", "/api/v1/click-to-call", {"json": {}}, "manager"),
        ("POST", "/api/v1/click-to-call", "/api/v1/click-to-call", {"data": b"[", "headers": {}}, "crm"),
        ("GET", f"/api/v1/click-to-call/{c2c_id}", "/api/v1/click-to-call/{id}", {}, "crm"),
        ("GET", "/api/v1/click-to-call/nope", "/api/v1/click-to-call/{id}", {}, "crm"),
        ("GET", "/api/v1/events", "/api/v1/events", {}, "manager"),
        ("GET", "/api/v1/reports/summary", "/api/v1/reports/summary",
         {"params": {"from": "2026-11-01T00:00:00Z", "to": "2026-12-01T00:00:00Z"}}, "manager"),
        ("GET", "/api/v1/reports/summary", "/api/v1/reports/summary",
         {"params": {"from": "2026-11-01T00:00:00Z", "to": "2026-12-01T00:00:00Z", "format": "csv"}},
         "manager"),
        ("GET", "/api/v1/reports/summary", "/api/v1/reports/summary", {}, "manager"),
    ]
    statuses = set()
    for method, path, template, kwargs, role in cases:
        headers = {**kwargs.pop("headers", {}), **(api.auth(role) if role else {})}
        resp = await api.client.request(method, path, headers=headers, **kwargs)
        body = await resp.read()
        check(doc, method, template, resp.status, resp.content_type, body)
        statuses.add(resp.status)
    assert {200, 202, 400, 401, 403, 404, 406, 422} <= statuses
    await api.sim.stop()
    await asyncio.sleep(0.1)
    for path, template, role in (("/readyz", "/readyz", "manager"),
                                 ("/api/v1/click-to-call", "/api/v1/click-to-call", "crm")):
        method = "POST" if "click" in path else "GET"
        resp = await api.client.request(method, path, headers=api.auth(role),
                                        json={"extension": "101", "number": "89161234567"})
        assert resp.status == 503
        check(doc, method, template, 503, resp.content_type, await resp.read())


async def test_every_route_is_documented(api: Api) -> None:
    doc = (await (await api.client.get("/api/v1/openapi.json", headers=api.auth("crm"))).json())
    # Every API route (web UI pages are HTML for people, not part of the API).
    routes = {(r.method.lower(), r.resource.canonical) for r in api.client.app.router.routes()
              if r.method != "HEAD" and r.resource is not None
              and (guarded(r.resource.canonical) or r.resource.canonical.startswith("/api/"))}
    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops
                  if p not in ("/healthz", "/healthz/active")}  # open probes
    assert routes == documented


@pytest.mark.timeout(420)
async def test_schemathesis_finds_no_server_errors(api: Api, tmp_path: Path) -> None:
    """schemathesis (its CLI, against the bridge's own port) with small, bounded example counts."""
    cli = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert cli is not None, "schemathesis is a test dependency"
    async with api.runtime.engine.begin() as conn:
        for i in range(5):
            await insert_call(conn, minutes=i)
    api.runtime.settings.click_to_call.burst = 1000
    api.runtime.settings.click_to_call.rate_per_minute = 100000
    proc = await asyncio.create_subprocess_exec(
        cli, "run", f"http://127.0.0.1:{api.port}/api/v1/openapi.json",
        "-H", f"Authorization: Bearer {api.tokens['admin']}",
        # Events stream forever.
        "--checks", "not_a_server_error", "--max-examples", "15", "--exclude-path", "/api/v1/events",
        "--no-color", "--seed", "1",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=tmp_path,
        env={**os.environ, "SCHEMATHESIS_HOOKS": ""})
    out, _ = await asyncio.wait_for(proc.communicate(), 400)
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text[-4000:]
    found = re.search(r"(\d+) generated, (\d+) passed", text)
    assert found is not None, text[-2000:]
    assert int(found.group(1)) >= 100 and found.group(1) == found.group(2), text[-2000:]
