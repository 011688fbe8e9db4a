"""API tokens: created once (shown once), stored as SHA-256, looked up by hash, revoked.

Why SHA-256 and not argon2: a token is 32 random bytes (256 bits) from `secrets`, so there is
nothing to guess or brute-force; a slow password hash only protects low-entropy secrets. A fast
hash lets every request be checked by one indexed lookup, and a stolen database still yields
no usable token.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from crm_sync.phones import ascii_digits
from pbx_bridge.auth.schema import api_tokens
from pbx_bridge.http.auth import ROLES, Principal, Role

TOKEN_PREFIX = "pbx_"  # noqa: S105 - a label in front of every token, not a secret


class TokenError(ValueError):
    """A token request that cannot be honoured (bad role, missing extension)."""


@dataclass(frozen=True)
class TokenInfo:
    id: int
    name: str
    role: Role
    extension: str | None
    prefix: str
    created_at: datetime
    revoked_at: datetime | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "name": self.name, "role": self.role, "extension": self.extension,
            "prefix": self.prefix, "created_at": self.created_at.isoformat(),
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
        }


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def _check(role: str, extension: str | None, name: str) -> None:
    if role not in ROLES:
        raise TokenError(f"unknown role {role!r}: one of {', '.join(ROLES)}")
    if not name.strip():
        raise TokenError("the token needs a name (who or what uses it)")
    if role == "operator" and not extension:
        raise TokenError("an operator token needs --extension (the operator's own phone)")
    if extension is not None and not (ascii_digits(extension) and 1 <= len(extension) <= 16):
        raise TokenError(f"extension {extension!r} must be digits")


async def create_token(
    conn: AsyncConnection, *, name: str, role: str, extension: str | None = None
) -> tuple[TokenInfo, str]:
    """A new token: its stored description and the token itself (the only time it is seen)."""
    _check(role, extension, name)
    token = new_token()
    now = datetime.now(UTC)
    prefix = token[: len(TOKEN_PREFIX) + 6]
    result = await conn.execute(
        api_tokens.insert().values(name=name.strip(), role=role, extension=extension,
                                   token_hash=hash_token(token), prefix=prefix, created_at=now)
    )
    token_id = int(result.inserted_primary_key[0])  # type: ignore[index]
    info = TokenInfo(token_id, name.strip(), role, extension, prefix, now, None)  # type: ignore[arg-type]
    return info, token


def _info(row: Any) -> TokenInfo:
    return TokenInfo(row.id, row.name, row.role, row.extension, row.prefix, row.created_at,
                     row.revoked_at)


async def list_tokens(conn: AsyncConnection) -> list[TokenInfo]:
    rows = await conn.execute(sa.select(api_tokens).order_by(api_tokens.c.id))
    return [_info(r) for r in rows]


async def valid_token_credentials(conn: AsyncConnection,
                                  hashes: set[str]) -> dict[str, tuple[str, str | None]]:
    """Of these token hashes, those not revoked, with their role and extension now."""
    t = api_tokens.c
    rows = await conn.execute(sa.select(t.token_hash, t.role, t.extension)
                              .where(t.token_hash.in_(hashes), t.revoked_at.is_(None)))
    return {row.token_hash: (row.role, row.extension) for row in rows}


async def extension_has_token(conn: AsyncConnection, extension: str) -> bool:
    """Whether an unrevoked API token is bound to this extension."""
    t = api_tokens.c
    found = await conn.execute(sa.select(t.id).where(t.extension == extension,
                                                     t.revoked_at.is_(None)).limit(1))
    return found.first() is not None


async def revoke_token(conn: AsyncConnection, token_id: int) -> TokenInfo | None:
    """Revoke (idempotent); None when there is no such token."""
    await conn.execute(
        api_tokens.update()
        .where(api_tokens.c.id == token_id, api_tokens.c.revoked_at.is_(None))
        .values(revoked_at=datetime.now(UTC))
    )
    row = (await conn.execute(sa.select(api_tokens).where(api_tokens.c.id == token_id))).first()
    return None if row is None else _info(row)


# Longer is no token of ours (a prefix and 43 characters): refused before hashing or lookup.
MAX_TOKEN_LENGTH = 256


class TokenVerifier:
    """Bearer token -> Principal, with a short cache so a request costs no query when warm."""

    def __init__(self, engine: AsyncEngine, cache_seconds: float = 5.0, max_entries: int = 10_000) -> None:
        self._engine = engine
        self._cache_seconds = cache_seconds
        self._max_entries = max_entries
        self._cache: dict[str, tuple[float, Principal | None]] = {}

    async def verify(self, token: str) -> Principal | None:
        if not token or len(token) > MAX_TOKEN_LENGTH:
            return None
        return await self.verify_digest(hash_token(token))

    async def verify_digest(self, digest: str) -> Principal | None:
        """The same for a token already hashed (the caller keeps the digest as the request's
        credential: one SHA-256 a request)."""
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and now - hit[0] < self._cache_seconds:
            return hit[1]
        async with self._engine.connect() as conn:
            row = (await conn.execute(
                sa.select(api_tokens).where(api_tokens.c.token_hash == digest)
            )).first()
        found = None
        if row is not None and row.revoked_at is None:
            found = Principal("token", row.id, row.name, row.role, row.extension)
        if len(self._cache) >= self._max_entries:
            self._cache.clear()  # bounded: random junk tokens must not grow memory
        self._cache[digest] = (now, found)
        return found

    def forget(self) -> None:
        self._cache.clear()
