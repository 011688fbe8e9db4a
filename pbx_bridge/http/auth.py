"""Who is calling the API, and what their role may do.

The authentication middleware (token lookup, see the API feature) stores a Principal in
``request[PRINCIPAL]``; handlers call ``require(request, *roles)``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncConnection

from pbx_bridge.http.errors import ApiError

Role = Literal["admin", "manager", "operator", "crm"]
ROLES: tuple[Role, ...] = ("admin", "manager", "operator", "crm")


@dataclass(frozen=True)
class Principal:
    kind: Literal["token", "user"]
    id: int
    name: str
    role: Role
    extension: str | None = None  # operators: their own extension


# Set by the token middleware (pbx_bridge.auth) or the web UI's session middleware.
PRINCIPAL: web.RequestKey[Principal] = web.RequestKey("principal", Principal)

CredentialKind = Literal["token", "session"]


@dataclass(frozen=True)
class Credential:
    """What authenticated a request: an API token (its SHA-256) or a web session (its id). Set
    beside PRINCIPAL by whoever authenticated it, so that a live stream can be re-checked later
    without knowing how tokens or sessions are stored."""

    kind: CredentialKind
    key: str


CREDENTIAL: web.RequestKey[Credential] = web.RequestKey("credential", Credential)

# Of the given keys of one kind, those that still hold, with their (role, extension) now. Each
# kind's check belongs to the feature that stores it (pbx_bridge.auth, pbx_bridge.web); the
# server passes them to whoever re-checks (the live streams) under CREDENTIAL_CHECKS.
CredentialCheck = Callable[[AsyncConnection, set[str]], Awaitable[dict[str, tuple[str, str | None]]]]
CREDENTIAL_CHECKS: web.AppKey[Mapping[CredentialKind, CredentialCheck]] = web.AppKey(
    "credential_checks", Mapping)


def principal(request: web.Request) -> Principal:
    found = request.get(PRINCIPAL)
    if not isinstance(found, Principal):
        raise ApiError(401, "unauthorized", "a valid bearer token is required")
    return found


def require(request: web.Request, *roles: Role) -> Principal:
    """The caller, if their role is one of `roles` (admin always is); 401 / 403 otherwise."""
    who = principal(request)
    if who.role != "admin" and who.role not in roles:
        raise ApiError(403, "forbidden", f"the {who.role} role may not do this")
    return who
