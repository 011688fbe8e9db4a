"""Who is calling the API, and what their role may do.

The authentication middleware (token lookup, see the API feature) stores a Principal in
``request[PRINCIPAL]``; handlers call ``require(request, *roles)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from aiohttp import web

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
