"""Bearer token -> request[PRINCIPAL] for the API; 401 for a missing or invalid token.

Guarded: everything under /api/ plus /readyz and /metrics (the process probe /healthz is open).
A principal already set by an earlier middleware (the web UI's session cookie) is kept. Web UI
pages outside /api/ do their own sign-in (redirects to the login page), and signed recording
links carry their own credential (the signature).
"""

from __future__ import annotations

from aiohttp import web

from pbx_bridge.auth.tokens import MAX_TOKEN_LENGTH, TokenVerifier, hash_token
from pbx_bridge.http.auth import CREDENTIAL, PRINCIPAL, Credential
from pbx_bridge.http.errors import ApiError, Handler

PUBLIC_PATHS = frozenset({"/healthz", "/healthz/active"})
GUARDED_PATHS = frozenset({"/readyz", "/metrics"})
GUARDED_PREFIX = "/api/"
# Credentials in the URL itself: the recordings feature's signed links.
SELF_AUTHENTICATED_PREFIXES = ("/api/v1/recordings/signed/",)
# Browsers cannot set headers on a WebSocket or EventSource: these paths also accept ?access_token=.
QUERY_TOKEN_PATHS = frozenset({"/api/v1/events"})

VERIFIER: web.AppKey[TokenVerifier] = web.AppKey("token_verifier", TokenVerifier)


def guarded(path: str) -> bool:
    if path in PUBLIC_PATHS or path.startswith(SELF_AUTHENTICATED_PREFIXES):
        return False
    return path.startswith(GUARDED_PREFIX) or path in GUARDED_PATHS


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
    if not guarded(request.path) or request.get(PRINCIPAL) is not None:
        return await handler(request)
    token = bearer_token(request)
    if token is None:
        raise ApiError(401, "unauthorized", "a bearer token is required (Authorization: Bearer ...)",
                       {"WWW-Authenticate": "Bearer"})
    digest = hash_token(token) if len(token) <= MAX_TOKEN_LENGTH else None
    found = None if digest is None else await request.app[VERIFIER].verify_digest(digest)
    if digest is None or found is None:
        raise ApiError(401, "unauthorized", "the token is invalid or revoked",
                       {"WWW-Authenticate": 'Bearer error="invalid_token"'})
    request[PRINCIPAL] = found
    request[CREDENTIAL] = Credential("token", digest)
    return await handler(request)
