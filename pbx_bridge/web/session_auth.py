"""Session cookies for people: who is signed in, and CSRF protection for what they send.

The API's authentication accepts either a bearer token or this session cookie:

* ``principal_from_session(request)`` -> Principal(kind="user") or None (no / bad / expired cookie);
* ``check_csrf(request)`` raises ApiError 403 when a cookie-authenticated request is unsafe
  (POST/PUT/PATCH/DELETE) without the session's token in ``X-CSRF-Token`` (or, for the UI's own
  HTML forms under /ui/, a ``csrf_token`` form field), or comes from another origin, or is a
  WebSocket handshake from another origin.

``session_middleware`` combines the two for /api/ and /ui/ paths when no principal is set yet.
Under /api/ a Bearer token wins (the token middleware decides); any other Authorization header
(Basic or Negotiate, which a browser behind a proxy sends by itself) leaves the request a cookie
request, CSRF and Origin checks included. The UI's pages under /ui/ only know the cookie, so no
header switches their checks off.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from urllib.parse import urlsplit

from aiohttp import web

from pbx_bridge.http.auth import CREDENTIAL, PRINCIPAL, Credential, Principal
from pbx_bridge.http.errors import ApiError
from pbx_bridge.log import event
from pbx_bridge.runtime import Runtime
from pbx_bridge.web.users import NewSession, SessionInfo, load_session

log = logging.getLogger("pbx_bridge.web")

COOKIE_NAME = "pbx_bridge_session"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FORM_FIELD = "csrf_token"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# The session that authenticated this request (None when there was none), once looked up.
WEB_SESSION: web.RequestKey[SessionInfo | None] = web.RequestKey("web_session", SessionInfo)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _runtime(request: web.Request) -> Runtime:
    from pbx_bridge.http.app_keys import RUNTIME  # local: pbx_bridge.server.app registers this module

    return request.app[RUNTIME]


async def session_from_request(request: web.Request) -> SessionInfo | None:
    """The live session named by the request's cookie (looked up once per request)."""
    if WEB_SESSION in request:
        return request[WEB_SESSION]
    cookie = request.cookies.get(COOKIE_NAME)
    info: SessionInfo | None = None
    if cookie and len(cookie) <= 128:
        runtime = _runtime(request)
        idle = timedelta(minutes=runtime.settings.web.idle_minutes)
        async with runtime.engine.begin() as conn:
            info = await load_session(conn, cookie, idle)
    request[WEB_SESSION] = info
    return info


def principal_of(info: SessionInfo) -> Principal:
    user = info.user
    return Principal(kind="user", id=user.id, name=user.username, role=user.role,
                     extension=user.extension)


async def principal_from_session(request: web.Request) -> Principal | None:
    info = await session_from_request(request)
    return None if info is None else principal_of(info)


def _same_origin(request: web.Request, origin: str) -> bool:
    if origin == "null":
        return False
    return urlsplit(origin).netloc.lower() == (request.host or "").lower()


def check_origin(request: web.Request) -> None:
    """A browser's Origin header, when sent, must be this server."""
    origin = request.headers.get("Origin")
    if origin is not None and not _same_origin(request, origin):
        event(log, logging.WARNING, "web.csrf.origin_rejected", path=request.path, origin=origin)
        raise ApiError(403, "csrf_failed", "cross-origin request refused")


async def check_csrf(request: web.Request) -> None:
    """Refuse a cookie-authenticated request that could have been forged by another site."""
    info = request.get(WEB_SESSION)
    if not isinstance(info, SessionInfo):
        return  # not authenticated by the cookie: nothing to forge
    is_websocket = request.headers.get("Upgrade", "").lower() == "websocket"
    if request.method not in UNSAFE_METHODS and not is_websocket:
        return
    check_origin(request)
    if is_websocket and request.method not in UNSAFE_METHODS:
        return  # a handshake cannot carry headers from JS; its Origin was checked
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and request.path.startswith("/ui/") and request.content_type in (
        "application/x-www-form-urlencoded", "multipart/form-data"
    ):
        form = await request.post()
        field = form.get(CSRF_FORM_FIELD)
        sent = field if isinstance(field, str) else None
    if not sent or not hmac.compare_digest(sent.encode(), info.csrf_token.encode()):
        event(log, logging.WARNING, "web.csrf.rejected", path=request.path, user=info.user.username)
        raise ApiError(403, "csrf_failed", f"missing or wrong {CSRF_HEADER} header")


def _has_bearer(request: web.Request) -> bool:
    scheme, _, _value = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer"


@web.middleware
async def session_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Set request[PRINCIPAL] from the session cookie for /api/ and /ui/ paths."""
    path = request.path
    if (
        PRINCIPAL not in request
        and (path.startswith("/ui/") or (path.startswith("/api/") and not _has_bearer(request)))
        and not path.startswith("/ui/static/")
        and path != "/ui/login"  # signing in (again) replaces the session; it checks Origin itself
    ):
        found = await principal_from_session(request)
        info = request.get(WEB_SESSION)
        if found is not None and info is not None:
            await check_csrf(request)
            request[PRINCIPAL] = found
            request[CREDENTIAL] = Credential("session", info.id)
    return await handler(request)


def cookie_secure(request: web.Request) -> bool:
    mode = _runtime(request).settings.web
    if mode.cookie_secure == "always":
        return True
    if mode.cookie_secure == "never":
        return False
    if request.secure:
        return True
    if mode.trust_forwarded_proto:
        return request.headers.get("X-Forwarded-Proto", "").lower() == "https"
    return False


def set_session_cookie(request: web.Request, response: web.StreamResponse, new: NewSession) -> None:
    runtime = _runtime(request)
    response.set_cookie(
        COOKIE_NAME, new.cookie_value, path="/", httponly=True, samesite="Lax",
        secure=cookie_secure(request), max_age=int(runtime.settings.web.session_hours * 3600),
    )


def clear_session_cookie(request: web.Request, response: web.StreamResponse) -> None:
    response.del_cookie(COOKIE_NAME, path="/", secure=cookie_secure(request), httponly=True,
                        samesite="Lax")
