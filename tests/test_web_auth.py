"""Web UI sign-in: password hashing, users and sessions on both databases, the session cookie,
CSRF refusals, session expiry, roles on pages, languages."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy.ext.asyncio import AsyncEngine

from pbx_bridge.config import Settings
from pbx_bridge.db.engine import make_sessionmaker
from pbx_bridge.http.auth import Principal, require
from pbx_bridge.i18n import choose_language, load_catalogs, parse_accept_language
from pbx_bridge.runtime import Runtime
from pbx_bridge.server.app import make_app
from pbx_bridge.web import users as store
from pbx_bridge.web.login_throttle import LoginThrottle
from pbx_bridge.web.passwords import PasswordRejected, hash_password, needs_rehash, verify_password
from pbx_bridge.web.schema import web_sessions
from pbx_bridge.web.session_auth import COOKIE_NAME

WEB = Path(__file__).resolve().parent.parent / "pbx_bridge" / "web"

# --- passwords ------------------------------------------------------------------------------


def test_password_hash_is_argon2id_and_verifies() -> None:
    hashed = hash_password("correct horse battery")
    assert hashed.startswith("$argon2id$")
    assert "correct horse" not in hashed
    assert verify_password(hashed, "correct horse battery")
    assert not verify_password(hashed, "correct horse batterY")
    assert hash_password("correct horse battery") != hashed  # salted
    assert not needs_rehash(hashed)


def test_bad_passwords_and_hashes_are_refused() -> None:
    with pytest.raises(PasswordRejected, match="at least 8"):
        hash_password("short")
    with pytest.raises(PasswordRejected, match="blank"):
        hash_password("          ")
    with pytest.raises(PasswordRejected, match="at most"):
        hash_password("x" * 2000)
    assert not verify_password("not-a-hash", "whatever123")
    assert not verify_password(hash_password("whatever123"), "w" * 5000)
    assert needs_rehash("not-a-hash")


# --- users and sessions in the database -----------------------------------------------------


async def test_users_store(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        anna = await store.create_user(conn, username="anna", password="pass-word-1", role="manager")
        op = await store.create_user(conn, username="op1", password="pass-word-2", role="operator",
                                     extension="101", language="ru")
    assert (anna.role, anna.extension, anna.disabled) == ("manager", None, False)
    assert (op.extension, op.language) == ("101", "ru")
    async with engine.begin() as conn:
        with pytest.raises(store.UserInputError, match="already exists"):
            await store.create_user(conn, username="ANNA", password="pass-word-1", role="manager")
        with pytest.raises(store.UserInputError, match="crm role is for API tokens"):
            await store.create_user(conn, username="bot", password="pass-word-1", role="crm")
        with pytest.raises(store.UserInputError, match="needs --extension"):
            await store.create_user(conn, username="op2", password="pass-word-1", role="operator")
        with pytest.raises(store.UserInputError, match="extension"):
            await store.create_user(conn, username="op3", password="pass-word-1", role="operator",
                                    extension="1'; drop")
        with pytest.raises(store.UserInputError, match="username"):
            await store.create_user(conn, username="<script>", password="pass-word-1", role="admin")
        with pytest.raises(PasswordRejected):
            await store.create_user(conn, username="weak", password="123", role="admin")
    async with engine.begin() as conn:
        assert [u.username for u in await store.list_users(conn)] == ["anna", "op1"]
        assert (await store.authenticate(conn, "Anna", "pass-word-1")) is not None
        assert (await store.authenticate(conn, "anna", "wrong-password")) is None
        assert (await store.authenticate(conn, "nobody", "pass-word-1")) is None
        found = await store.find_user(conn, "anna")
        assert found is not None and found.last_login_at is not None


async def test_session_expiry_idle_and_absolute(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        user = await store.create_user(conn, username="anna", password="pass-word-1", role="admin")
        new = await store.start_session(conn, user, timedelta(hours=12))
    idle = timedelta(minutes=30)
    t0 = datetime.now(UTC)
    async with engine.begin() as conn:
        info = await store.load_session(conn, new.cookie_value, idle, now=t0 + timedelta(minutes=5))
        assert info is not None and info.user.username == "anna" and info.csrf_token == new.csrf_token
        # Activity moves the idle clock: 5 + 29 minutes is still within 30 of the last request.
        assert await store.load_session(conn, new.cookie_value, idle, now=t0 + timedelta(minutes=34))
        assert await store.load_session(conn, "forged", idle) is None
    async with engine.begin() as conn:
        # Idle for longer than allowed: gone, and removed from the table.
        assert await store.load_session(conn, new.cookie_value, idle, now=t0 + timedelta(minutes=70)) is None
        assert (await conn.execute(sa.select(sa.func.count()).select_from(web_sessions))).scalar() == 0
        second = await store.start_session(conn, user, timedelta(hours=1))
    async with engine.begin() as conn:
        # Active all the time but past the absolute end.
        assert await store.load_session(conn, second.cookie_value, timedelta(days=1),
                                        now=t0 + timedelta(hours=1, minutes=1)) is None
        third = await store.start_session(conn, user, timedelta(hours=1))
        await store.set_disabled(conn, "anna")
        assert await store.load_session(conn, third.cookie_value, idle) is None
    async with engine.connect() as conn:
        stored = (await conn.execute(sa.select(web_sessions.c.id))).scalars().all()
    assert third.cookie_value not in stored  # only hashes are stored


# --- HTTP: the cookie, CSRF, pages ----------------------------------------------------------


async def whoami(request: web.Request) -> web.Response:
    who = require(request, "operator", "manager")
    return web.json_response({"kind": who.kind, "name": who.name, "role": who.role,
                              "extension": who.extension})


Client = TestClient[Any, Any]


@pytest.fixture
async def client(
    engine: AsyncEngine, settings: Settings,
    aiohttp_client: Callable[[web.Application], Awaitable[Client]],
) -> AsyncIterator[Client]:
    async with engine.begin() as conn:
        await store.create_user(conn, username="anna", password="pass-word-1", role="manager")
        await store.create_user(conn, username="op1", password="pass-word-2", role="operator",
                                extension="101")
    app = make_app(Runtime(settings=settings, engine=engine, sessions=make_sessionmaker(engine)))
    # An API-style endpoint to see what the session middleware gives handlers.
    app.router.add_route("*", "/api/v1/test-whoami", whoami)
    yield await aiohttp_client(app)


async def sign_in(client: Client, username: str = "anna", password: str = "pass-word-1") -> str:
    resp = await client.post("/ui/login", data={"username": username, "password": password},
                             allow_redirects=False)
    assert resp.status == 302, await resp.text()
    page = await client.get(resp.headers["Location"])
    assert page.status == 200
    match = re.search(r'<meta name="csrf-token" content="([^"]+)">', await page.text())
    assert match
    return match.group(1)


async def test_sign_in_sets_a_safe_cookie(client: Client) -> None:
    resp = await client.post("/ui/login", data={"username": "anna", "password": "pass-word-1",
                                                "next": "/ui/reports"}, allow_redirects=False)
    assert resp.status == 302 and resp.headers["Location"] == "/ui/reports"
    cookie = resp.headers["Set-Cookie"]
    assert cookie.startswith(COOKIE_NAME + "=")
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # plain HTTP here; see the next test for HTTPS
    who = await client.get("/api/v1/test-whoami")
    assert await who.json() == {"kind": "user", "name": "anna", "role": "manager", "extension": None}


async def test_cookie_secure_when_configured(client: Client, settings: Settings) -> None:
    settings.web.cookie_secure = "always"
    resp = await client.post("/ui/login", data={"username": "anna", "password": "pass-word-1"},
                             allow_redirects=False)
    assert "Secure" in resp.headers["Set-Cookie"]
    settings.web.cookie_secure = "auto"
    settings.web.trust_forwarded_proto = True
    resp = await client.post("/ui/login", data={"username": "anna", "password": "pass-word-1"},
                             headers={"X-Forwarded-Proto": "https"}, allow_redirects=False)
    assert "Secure" in resp.headers["Set-Cookie"]


async def test_wrong_password_and_unknown_user(client: Client) -> None:
    for username, password in (("anna", "wrong-pass"), ("ghost", "pass-word-1"), ("", "")):
        resp = await client.post("/ui/login", data={"username": username, "password": password},
                                 allow_redirects=False)
        assert resp.status == 401
        assert "Set-Cookie" not in resp.headers
    assert (await client.get("/api/v1/test-whoami")).status == 401


async def test_login_throttle(client: Client) -> None:
    for _ in range(10):
        resp = await client.post("/ui/login", data={"username": "anna", "password": "nope-nope"})
        assert resp.status == 401
    # Now even the right password waits: guessing cannot go on.
    resp = await client.post("/ui/login", data={"username": "anna", "password": "pass-word-1"},
                             allow_redirects=False)
    assert resp.status == 429


def test_throttle_window_passes() -> None:
    now = [0.0]
    throttle = LoginThrottle(max_failures=2, window_seconds=60, clock=lambda: now[0])
    throttle.failed("a", "10.0.0.1")
    throttle.failed("a", "10.0.0.1")
    assert throttle.blocked("a", "10.0.0.1") and not throttle.blocked("b", "10.0.0.1")
    now[0] = 61
    assert not throttle.blocked("a", "10.0.0.1")


async def test_csrf_refusals(client: Client) -> None:
    token = await sign_in(client)
    # Unsafe methods with the cookie but without the token: 403 in the API's error shape.
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        resp = await client.request(method, "/api/v1/test-whoami", json={})
        assert resp.status == 403, method
        assert (await resp.json())["error"]["code"] == "csrf_failed"
    resp = await client.post("/api/v1/test-whoami", headers={"X-CSRF-Token": "wrong"})
    assert resp.status == 403
    resp = await client.post("/api/v1/test-whoami", headers={"X-CSRF-Token": token})
    assert resp.status == 200
    # The right token from another site's page is still refused.
    resp = await client.post("/api/v1/test-whoami",
                             headers={"X-CSRF-Token": token, "Origin": "https://evil.example"})
    assert resp.status == 403
    # A WebSocket handshake from another origin is refused before any handler runs.
    resp = await client.get("/api/v1/test-whoami", headers={
        "Origin": "https://evil.example", "Upgrade": "websocket", "Connection": "Upgrade"})
    assert resp.status == 403
    # The UI's own forms: the form field, or nothing happens.
    resp = await client.post("/ui/settings", data={"language": "en"}, allow_redirects=False)
    assert resp.status == 403
    resp = await client.post("/ui/logout", allow_redirects=False)
    assert resp.status == 403
    assert (await client.get("/api/v1/test-whoami")).status == 200  # still signed in
    resp = await client.post("/ui/logout", data={"csrf_token": token}, allow_redirects=False)
    assert resp.status == 302
    assert (await client.get("/api/v1/test-whoami")).status == 401


async def test_login_from_another_site_is_refused(client: Client) -> None:
    resp = await client.post("/ui/login", data={"username": "anna", "password": "pass-word-1"},
                             headers={"Origin": "https://evil.example"}, allow_redirects=False)
    assert resp.status == 403
    assert "Set-Cookie" not in resp.headers


async def test_bearer_header_wins_over_cookie(client: Client) -> None:
    await sign_in(client)
    # With an Authorization header the session is not used (the token middleware decides).
    resp = await client.get("/api/v1/test-whoami", headers={"Authorization": "Bearer nope"})
    assert resp.status == 401


async def test_expired_session_signs_out(client: Client, engine: AsyncEngine) -> None:
    await sign_in(client)
    assert (await client.get("/ui/calls", allow_redirects=False)).status == 200
    async with engine.begin() as conn:
        await conn.execute(web_sessions.update().values(
            expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    resp = await client.get("/ui/calls", allow_redirects=False)
    assert resp.status == 302 and resp.headers["Location"] == "/ui/login?next=/ui/calls"
    assert (await client.get("/api/v1/test-whoami")).status == 401


async def test_pages_need_sign_in_and_role(client: Client) -> None:
    for path in ("/ui/live", "/ui/calls", "/ui/calls/1", "/ui/clients", "/ui/clients/7",
                 "/ui/reports", "/ui/settings", "/ui/reports/summary.csv"):
        resp = await client.get(path, allow_redirects=False)
        assert resp.status == 302 and resp.headers["Location"].startswith("/ui/login?next="), path
    await sign_in(client, "op1", "pass-word-2")
    assert (await client.get("/ui/live")).status == 200
    resp = await client.get("/ui/reports")
    assert resp.status == 403 and "text/html" in resp.headers["Content-Type"]
    assert (await client.get("/ui/reports/summary.csv")).status == 403
    who = await (await client.get("/api/v1/test-whoami")).json()
    assert who == {"kind": "user", "name": "op1", "role": "operator", "extension": "101"}


async def test_next_cannot_leave_the_site(client: Client) -> None:
    for target in ("//evil.example/x", "https://evil.example", "/\\evil.example"):
        resp = await client.post("/ui/login", data={"username": "anna", "password": "pass-word-1",
                                                    "next": target}, allow_redirects=False)
        assert resp.headers["Location"] == "/ui/calls", target


async def test_page_headers_and_context(client: Client) -> None:
    await sign_in(client, "op1", "pass-word-2")
    resp = await client.get("/ui/calls/42", headers={"Accept-Language": "en-US,en;q=0.9"})
    assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
    assert resp.headers["X-Frame-Options"] == "DENY"
    html = await resp.text()
    context = json.loads(re.search(r'<script id="ui-context" type="application/json">(.*?)</script>',
                                   html, re.S).group(1))  # type: ignore[union-attr]
    assert context["user"] == {"username": "op1", "role": "operator", "extension": "101",
                               "language": None}
    assert context["data"]["call_id"] == 42 and context["lang"] == "en"
    # The call page is told which model transcribes, in which language (issue 14).
    assert context["data"]["transcription"]["language"] == "ko"
    assert "Call journal" in html


async def test_language_from_browser_then_setting(client: Client) -> None:
    token = await sign_in(client)
    page = await (await client.get("/ui/calls", headers={"Accept-Language": "ru-RU,ru;q=0.9"})).text()
    assert "Журнал звонков" in page and '<html lang="ru">' in page
    page = await (await client.get("/ui/calls", headers={"Accept-Language": "en-GB"})).text()
    assert "Call journal" in page
    resp = await client.post("/ui/settings", data={"language": "ru", "csrf_token": token},
                             allow_redirects=False)
    assert resp.status == 302
    page = await (await client.get("/ui/calls", headers={"Accept-Language": "en-GB"})).text()
    assert "Журнал звонков" in page


# --- languages ------------------------------------------------------------------------------


def test_accept_language_parsing() -> None:
    assert parse_accept_language("fr-CH, fr;q=0.9, en;q=0.8, de;q=0.7, *;q=0.5") == [
        "fr", "fr", "en", "de", "*"]
    assert parse_accept_language("en;q=0.1, ru") == ["ru", "en"]
    assert parse_accept_language("ru;q=0, en;q=bogus") == []
    assert choose_language(None, "de, en;q=0.5", "ru") == "en"
    assert choose_language(None, "de", "ru") == "ru"
    assert choose_language("en", "ru", "ru") == "en"
    assert choose_language(None, None, "xx") == "ru"


def test_catalogs_complete_and_cover_every_string_used() -> None:
    catalogs = load_catalogs()
    assert set(catalogs["ru"]) == set(catalogs["en"])
    used: set[str] = set()
    for path in (WEB / "templates").glob("*.html"):
        used |= set(re.findall(r"\bt\('([a-z_.0-9]+)'\)", path.read_text()))
    for path in (WEB / "static").glob("*.js"):
        used |= set(re.findall(r'\bT\("([a-z_.0-9]+)"', path.read_text()))
    for path in WEB.glob("*.py"):
        used |= set(re.findall(r'\bt\("([a-z_.0-9]+)"', path.read_text()))
    missing = sorted(k for k in used if not k.endswith(".") and k not in catalogs["en"])
    assert missing == []
    # Keys built at run time: every value the code can produce.
    for prefix, values in {"role": ("admin", "manager", "operator"),
                           "direction": ("inbound", "outbound", "internal", "unknown"),
                           "status": ("answered", "no_answer", "busy", "abandoned", "failed"),
                           "speaker": ("operator", "customer"), "month.short": map(str, range(1, 13)),
                           "reports.group": ("day", "operator", "source"),
                           "reports.direction": ("all", "inbound", "outbound")}.items():
        for value in values:
            assert f"{prefix}.{value}" in catalogs["ru"], f"{prefix}.{value}"
    assert any(re.search("[а-я]", v) for v in catalogs["ru"].values())


def test_principal_shape() -> None:
    # The API's Principal carries people as kind="user" (pbx_bridge/http/auth.py).
    p = Principal(kind="user", id=1, name="anna", role="manager")
    assert p.extension is None


# --- the [web] configuration section --------------------------------------------------------


@pytest.mark.parametrize(("text", "message"), [
    ('[web]\nreport_timezone = "Mars/Olympus"\n', "'web.report_timezone' 'Mars/Olympus' is not a time zone"),
    ('[web]\ncookie_secure = "sometimes"\n', "'web.cookie_secure' must be one of"),
    ("[web]\nsession_hours = 0\n", "must be positive"),
    ('[web]\ndefault_language = "de"\n', "'web.default_language' must be one of"),
    # Ad channel names come from crm.did_sources only.
    ('[web.did_labels]\n"+74951110000" = "x"\n', "unknown key 'web.did_labels'"),
    ("[web]\nsession_minutes = 5\n", "unknown key 'web.session_minutes'"),
])
def test_web_config_errors(tmp_path: Path, text: str, message: str) -> None:
    from pbx_bridge.config import ConfigError, load_settings

    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings(path, environ={})


def test_web_config_from_file_and_environment(tmp_path: Path) -> None:
    from pbx_bridge.config import load_settings

    path = tmp_path / "c.toml"
    path.write_text('[web]\nreport_timezone = "Europe/Moscow"\n')
    settings = load_settings(path, environ={"PBX_BRIDGE_WEB__COOKIE_SECURE": "always"})
    assert settings.web.report_timezone == "Europe/Moscow"
    assert settings.web.cookie_secure == "always"
