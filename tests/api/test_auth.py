"""Every endpoint x every role: 401 without a valid token, 403 for a role that may not, and
neither for a role that may. Tokens never reach the logs."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

from pbx_bridge.auth.middleware import guarded
from pbx_bridge.log import JsonFormatter, KeyValueFormatter
from tests.api.conftest import Api

ALL = {"admin", "manager", "operator", "crm"}
SUMMARY = "/api/v1/reports/summary?from=2026-01-01T00:00:00Z&to=2026-02-01T00:00:00Z"

# (method, template, path, roles allowed). test_matrix_covers_every_route keeps it complete; rows
# for routes this tree does not serve (client cards before crm_sync is merged) are not checked.
ENDPOINTS: list[tuple[str, str, str, set[str]]] = [
    ("GET", "/readyz", "/readyz", {"admin", "manager"}),
    ("GET", "/metrics", "/metrics", {"admin", "manager"}),
    ("GET", "/api/v1/openapi.json", "/api/v1/openapi.json", ALL),
    ("POST", "/api/v1/click-to-call", "/api/v1/click-to-call", {"admin", "crm", "operator"}),
    ("GET", "/api/v1/click-to-call/{id}", "/api/v1/click-to-call/abc",
     {"admin", "crm", "operator", "manager"}),
    ("GET", "/api/v1/calls", "/api/v1/calls", {"admin", "crm", "operator", "manager"}),
    ("GET", "/api/v1/calls/{id}", "/api/v1/calls/1", {"admin", "crm", "operator", "manager"}),
    ("GET", "/api/v1/calls/export", "/api/v1/calls/export", {"admin", "crm", "operator", "manager"}),
    ("GET", "/api/v1/events", "/api/v1/events", {"admin", "manager", "operator"}),
    ("GET", "/api/v1/reports/summary", SUMMARY, {"admin", "manager"}),
    # Client cards: every role that handles calls reaches them (the operator's screen pop links
    # to the card); which cards an operator may read and edit, and closing tasks, is checked card
    # by card in tests/api/test_card_policy.py. A manager closes no task.
    ("GET", "/api/v1/clients", "/api/v1/clients?q=ivan", ALL),
    ("POST", "/api/v1/clients", "/api/v1/clients", ALL),
    ("GET", "/api/v1/clients/{id}", "/api/v1/clients/1", ALL),
    ("PATCH", "/api/v1/clients/{id}", "/api/v1/clients/1", ALL),
    ("GET", "/api/v1/clients/{id}/timeline", "/api/v1/clients/1/timeline", ALL),
    ("POST", "/api/v1/clients/{id}/notes", "/api/v1/clients/1/notes", ALL),
    ("POST", "/api/v1/clients/{id}/merge", "/api/v1/clients/1/merge", ALL),
    ("GET", "/api/v1/tasks", "/api/v1/tasks", ALL),
    ("POST", "/api/v1/tasks", "/api/v1/tasks", ALL),
    ("POST", "/api/v1/tasks/{id}/close", "/api/v1/tasks/1/close", {"admin", "crm", "operator"}),
    ("GET", "/api/v1/routing/responsible", "/api/v1/routing/responsible?number=%2B74951234567",
     {"admin", "crm"}),
    # The recordings feature's endpoints (issue 6), behind the same middleware.
    ("GET", "/api/v1/calls/{id}/recording", "/api/v1/calls/1/recording",
     {"admin", "crm", "operator", "manager"}),
    ("POST", "/api/v1/calls/{id}/recording/link", "/api/v1/calls/1/recording/link",
     {"admin", "crm", "operator", "manager"}),
    ("POST", "/api/v1/calls/{id}/legal-hold", "/api/v1/calls/1/legal-hold", {"admin", "manager"}),
    # Click-to-call from a Kommo widget (issue 16): 404 here, the Kommo connector being off.
    ("POST", "/api/v1/crm/kommo/click-to-call", "/api/v1/crm/kommo/click-to-call", {"admin", "crm"}),
    # Transcription (issue 7).
    ("GET", "/api/v1/calls/{id}/transcript", "/api/v1/calls/1/transcript",
     {"admin", "crm", "operator", "manager"}),
]


def _routes(api: Api) -> set[tuple[str, str]]:
    """The routes the token guards (web UI pages sign in with their own session)."""
    return {(r.method, r.resource.canonical) for r in api.client.app.router.routes()
            if r.method != "HEAD" and r.resource is not None and guarded(r.resource.canonical)}


async def _call(api: Api, method: str, path: str, headers: dict[str, str]) -> int:
    kwargs: dict[str, Any] = {"headers": headers}
    if method in ("POST", "PATCH"):
        kwargs["json"] = {}  # invalid on purpose: an allowed role gets 422, and no call is placed
    resp = await api.client.request(method, path, **kwargs)
    body = await resp.read()
    if resp.status in (401, 403):
        assert resp.content_type == "application/json", body
        assert set((await resp.json())["error"]) == {"code", "message"}
    return resp.status


async def test_role_matrix(api: Api) -> None:
    revoked = await api.new_token("admin", name="revoked")
    async with api.runtime.engine.begin() as conn:
        from pbx_bridge.auth.tokens import revoke_token

        await revoke_token(conn, api.token_ids["revoked"])
    served = _routes(api)
    for method, template, path, allowed in ENDPOINTS:
        if (method, template) not in served:
            continue
        for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": f"Bearer {revoked}"},
                        {"Authorization": f"Basic {api.tokens['admin']}"}):
            assert await _call(api, method, path, headers) == 401, (method, path, headers)
        for role in sorted(ALL):
            status = await _call(api, method, path, api.auth(role))
            if role in allowed:
                assert status not in (401, 403), (method, path, role, status)
            else:
                assert status == 403, (method, path, role, status)
    assert api.originates() == []


async def test_healthz_is_open(api: Api) -> None:
    resp = await api.client.get("/healthz")
    assert resp.status == 200 and (await resp.json()) == {"status": "ok"}


async def test_what_is_guarded() -> None:
    for path in ("/api/v1/calls", "/api/v1/anything", "/readyz", "/metrics", "/api/v1/openapi.json"):
        assert guarded(path), path
    for path in ("/healthz", "/api/v1/recordings/signed/1.2.abc", "/ui/calls", "/"):
        assert not guarded(path), path


async def test_unknown_api_path_needs_a_token_too(api: Api) -> None:
    resp = await api.client.get("/api/v1/nothing-here")
    assert resp.status == 401
    resp = await api.client.get("/api/v1/nothing-here", headers=api.auth("crm"))
    assert resp.status == 404 and (await resp.json())["error"]["code"] == "not_found"


async def test_principal_set_before_is_kept(api: Api, aiohttp_client: Any) -> None:
    """The web UI's session middleware runs first and sets the principal; no token is needed."""
    from aiohttp import web

    from pbx_bridge.http.auth import PRINCIPAL, Principal
    from pbx_bridge.server.app import make_app

    @web.middleware
    async def session(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.headers.get("Cookie") == "session=ok":
            request[PRINCIPAL] = Principal("user", 9, "anna", "manager")
        return await handler(request)

    app = make_app(api.runtime)
    app.middlewares.insert(0, session)
    client = await aiohttp_client(app)
    assert (await client.get("/api/v1/calls", headers={"Cookie": "session=ok"})).status == 200
    assert (await client.get("/api/v1/calls", headers={"Cookie": "session=no"})).status == 401
    assert (await client.get("/api/v1/reports/summary", headers={"Cookie": "session=ok"})).status == 422


async def test_matrix_covers_every_route(api: Api) -> None:
    covered = {(m, t) for m, t, _, _ in ENDPOINTS}
    missing = {r for r in _routes(api) if r not in covered}
    assert missing == set()
    assert ("GET", "/api/v1/calls/{id}") in _routes(api)


async def test_tokens_never_logged(api: Api) -> None:
    buffer = io.StringIO()
    handlers = []
    for formatter in (KeyValueFormatter(), JsonFormatter()):
        handler = logging.StreamHandler(buffer)
        handler.setFormatter(formatter)
        handlers.append(handler)
    root = logging.getLogger()
    old_level = root.level
    root.setLevel(logging.DEBUG)
    for h in handlers:
        root.addHandler(h)
    bad = "pbx_definitely-not-a-valid-token-0123456789"
    try:
        await api.client.get("/api/v1/calls", headers=api.auth("crm"))
        await api.client.get("/api/v1/calls", headers={"Authorization": f"Bearer {bad}"})
        await api.client.get(f"/api/v1/events?access_token={api.tokens['manager']}")
        await api.client.get("/api/v1/calls?x=1", headers={"Authorization": f"Bearer {api.tokens['crm']}x"})
        logging.getLogger("pbx_bridge.test").info("header was Authorization: Bearer %s", bad)
    finally:
        for h in handlers:
            root.removeHandler(h)
        root.setLevel(old_level)
    text = buffer.getvalue()
    assert "http.request" in text and "/api/v1/calls" in text  # the requests were logged ...
    for token in [*api.tokens.values(), bad]:
        assert token not in text  # ... and no token with them
    assert "Bearer ***" in text


def test_tokens_cli(tmp_path: Path, db_url: str) -> None:
    """create prints the token once, list never shows it, revoke works; bad input is one line."""
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("PBX_BRIDGE_")}
    env["PBX_BRIDGE_DATABASE__URL"] = db_url
    root = Path(__file__).resolve().parents[2]

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "pbx_bridge", "tokens", *args], capture_output=True,
                              text=True, env=env, cwd=root, timeout=60)

    made = cli("create", "--role", "operator", "--extension", "101", "--name", "Anna")
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip().splitlines()[-1]
    assert token.startswith("pbx_") and len(token) > 40
    listed = cli("list")
    assert listed.returncode == 0 and "Anna" in listed.stdout and token not in listed.stdout
    assert token not in made.stderr and token not in listed.stderr
    assert cli("create", "--role", "operator", "--name", "x").returncode == 1
    bad_role = cli("create", "--role", "root", "--name", "x")
    assert bad_role.returncode == 2 and "invalid choice" in bad_role.stderr
    assert cli("revoke", "1").returncode == 0
    missing = cli("revoke", "999")
    assert missing.returncode == 1 and "no token with id 999" in missing.stderr
    assert '"revoked_at": null' not in cli("list", "--json").stdout
