"""Bearer token -> request["principal"]; 401 for a missing or invalid token (except /healthz)."""

from __future__ import annotations

from aiohttp import web

from pbx_bridge.auth.tokens import TokenVerifier
from pbx_bridge.http.errors import ApiError, Handler

# Open without a token: the process liveness probe only.
PUBLIC_PATHS = frozenset({"/healthz"})
# Signed, expiring recording links are for CRMs that cannot send headers: the signature in the
# path is the credential, checked by the recordings handler itself.
PUBLIC_PREFIXES = ("/api/v1/recordings/signed/",)
# What needs a bearer token (or a web UI session): the API and the operations endpoints.
TOKEN_PREFIXES = ("/api/",)
TOKEN_PATHS = frozenset({"/readyz", "/metrics"})
# Browsers cannot set headers on a WebSocket: these paths also accept ?access_token=.
QUERY_TOKEN_PATHS = frozenset({"/api/v1/events"})

VERIFIER: web.AppKey[TokenVerifier] = web.AppKey("token_verifier", TokenVerifier)


def bearer_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if request.path in QUERY_TOKEN_PATHS:
        return request.query.get("access_token") or None
    return None


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path in PUBLIC_PATHS or request.path.startswith(PUBLIC_PREFIXES):
        return await handler(request)
    if "principal" in request:  # a signed-in web UI session (pbx_bridge.web.session_auth)
        return await handler(request)
    if not request.path.startswith(TOKEN_PREFIXES) and request.path not in TOKEN_PATHS:
        return await handler(request)  # web UI pages check their own session (login redirect)
    token = bearer_token(request)
    if token is None:
        raise ApiError(401, "unauthorized", "a bearer token is required (Authorization: Bearer ...)",
                       {"WWW-Authenticate": "Bearer"})
    found = await request.app[VERIFIER].verify(token)
    if found is None:
        raise ApiError(401, "unauthorized", "the token is invalid or revoked",
                       {"WWW-Authenticate": 'Bearer error="invalid_token"'})
    request["principal"] = found
    return await handler(request)
