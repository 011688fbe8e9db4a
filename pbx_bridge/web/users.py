"""People who sign in to the web UI, and their sessions (store functions over the web tables)."""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from pbx_bridge.web.passwords import DUMMY_HASH, hash_password, needs_rehash, verify_password
from pbx_bridge.web.schema import web_sessions, web_users

PersonRole = Literal["admin", "manager", "operator"]
PERSON_ROLES: tuple[PersonRole, ...] = ("admin", "manager", "operator")
LANGUAGES = ("ru", "en")
USERNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
EXTENSION_RE = re.compile(r"^[0-9]{2,8}$")
# last_seen_at is written at most this often, not on every request.
TOUCH_INTERVAL = timedelta(seconds=60)


class UserInputError(ValueError):
    """Bad input for a user operation; the message says what to fix."""


@dataclass(frozen=True)
class User:
    id: int
    username: str
    role: PersonRole
    extension: str | None
    language: str | None
    disabled: bool
    created_at: datetime
    last_login_at: datetime | None


@dataclass(frozen=True)
class SessionInfo:
    id: str  # hash of the cookie value
    user: User
    csrf_token: str
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime


@dataclass(frozen=True)
class NewSession:
    cookie_value: str  # given to the browser once; only its hash is stored
    csrf_token: str
    expires_at: datetime


def now_utc() -> datetime:
    return datetime.now(UTC)


def session_key(cookie_value: str) -> str:
    return hashlib.sha256(cookie_value.encode()).hexdigest()


def _user(row: Any) -> User:
    return User(id=row.id, username=row.username, role=row.role, extension=row.extension,
                language=row.language, disabled=bool(row.disabled), created_at=row.created_at,
                last_login_at=row.last_login_at)


def validate_user_fields(username: str, role: str, extension: str | None) -> None:
    if not USERNAME_RE.match(username):
        raise UserInputError(
            "the username must be 1-64 letters, digits or . _ @ - and start with a letter or digit"
        )
    if role == "crm":
        raise UserInputError("the crm role is for API tokens, not for people")
    if role not in PERSON_ROLES:
        raise UserInputError(f"unknown role {role!r}: use one of {', '.join(PERSON_ROLES)}")
    if role == "operator" and not extension:
        raise UserInputError("an operator needs --extension (the phone extension, e.g. 101)")
    if extension is not None and not EXTENSION_RE.match(extension):
        raise UserInputError(f"the extension {extension!r} must be 2-8 digits")


async def create_user(
    conn: AsyncConnection, *, username: str, password: str, role: str,
    extension: str | None = None, language: str | None = None,
) -> User:
    validate_user_fields(username, role, extension)
    if language is not None and language not in LANGUAGES:
        raise UserInputError(f"unknown language {language!r}: use ru or en")
    existing = await conn.execute(
        sa.select(web_users.c.id).where(sa.func.lower(web_users.c.username) == username.lower()))
    if existing.first() is not None:
        raise UserInputError(f"a user named {username!r} already exists")
    password_hash = hash_password(password)  # raises PasswordRejected (a ValueError)
    result = await conn.execute(
        web_users.insert().values(
            username=username, password_hash=password_hash, role=role, extension=extension,
            language=language, disabled=False, created_at=now_utc(),
        ).returning(web_users.c.id)
    )
    user = await get_user(conn, result.scalar_one())
    assert user is not None
    return user


async def get_user(conn: AsyncConnection, user_id: int) -> User | None:
    row = (await conn.execute(sa.select(web_users).where(web_users.c.id == user_id))).first()
    return None if row is None else _user(row)


async def find_user(conn: AsyncConnection, username: str) -> User | None:
    row = (await conn.execute(
        sa.select(web_users).where(sa.func.lower(web_users.c.username) == username.lower()))).first()
    return None if row is None else _user(row)


async def list_users(conn: AsyncConnection) -> list[User]:
    rows = await conn.execute(sa.select(web_users).order_by(web_users.c.username))
    return [_user(r) for r in rows]


async def set_disabled(conn: AsyncConnection, username: str, disabled: bool = True) -> User:
    user = await find_user(conn, username)
    if user is None:
        raise UserInputError(f"no user named {username!r}")
    await conn.execute(web_users.update().where(web_users.c.id == user.id).values(disabled=disabled))
    if disabled:
        # Disabling signs the person out everywhere at once.
        await conn.execute(web_sessions.delete().where(web_sessions.c.user_id == user.id))
    found = await get_user(conn, user.id)
    assert found is not None
    return found


async def set_password(conn: AsyncConnection, username: str, password: str) -> None:
    user = await find_user(conn, username)
    if user is None:
        raise UserInputError(f"no user named {username!r}")
    await conn.execute(web_users.update().where(web_users.c.id == user.id)
                       .values(password_hash=hash_password(password)))
    await conn.execute(web_sessions.delete().where(web_sessions.c.user_id == user.id))


async def set_language(conn: AsyncConnection, user_id: int, language: str | None) -> None:
    if language is not None and language not in LANGUAGES:
        raise UserInputError(f"unknown language {language!r}: use ru or en")
    await conn.execute(web_users.update().where(web_users.c.id == user_id).values(language=language))


async def authenticate(conn: AsyncConnection, username: str, password: str) -> User | None:
    """The enabled user with this username and password, or None (same time either way)."""
    row = (await conn.execute(
        sa.select(web_users).where(sa.func.lower(web_users.c.username) == username.lower()))).first()
    if row is None:
        verify_password(DUMMY_HASH, password)
        return None
    if not verify_password(row.password_hash, password) or row.disabled:
        return None
    values: dict[str, Any] = {"last_login_at": now_utc()}
    if needs_rehash(row.password_hash):
        values["password_hash"] = hash_password(password)
    await conn.execute(web_users.update().where(web_users.c.id == row.id).values(**values))
    return _user(row)


async def start_session(conn: AsyncConnection, user: User, lifetime: timedelta) -> NewSession:
    now = now_utc()
    cookie_value = secrets.token_urlsafe(32)
    csrf_token = secrets.token_urlsafe(32)
    expires_at = now + lifetime
    await conn.execute(web_sessions.insert().values(
        id=session_key(cookie_value), user_id=user.id, csrf_token=csrf_token, created_at=now,
        last_seen_at=now, expires_at=expires_at))
    # Sign-in is a good moment to clear everyone's expired sessions.
    await conn.execute(web_sessions.delete().where(web_sessions.c.expires_at < now))
    return NewSession(cookie_value=cookie_value, csrf_token=csrf_token, expires_at=expires_at)


async def load_session(
    conn: AsyncConnection, cookie_value: str, idle: timedelta, now: datetime | None = None
) -> SessionInfo | None:
    """The live session for this cookie value (its user enabled), refreshing its idle clock."""
    now = now or now_utc()
    key = session_key(cookie_value)
    s = web_sessions.c
    row = (await conn.execute(
        sa.select(s.csrf_token, s.created_at.label("session_created_at"), s.last_seen_at,
                  s.expires_at, web_users)
        .join(web_users, web_users.c.id == s.user_id)
        .where(s.id == key)
    )).first()
    if row is None:
        return None
    if row.disabled or now >= row.expires_at or now >= row.last_seen_at + idle:
        await conn.execute(web_sessions.delete().where(s.id == key))
        return None
    last_seen = row.last_seen_at
    if now - last_seen >= TOUCH_INTERVAL:
        await conn.execute(web_sessions.update().where(s.id == key).values(last_seen_at=now))
        last_seen = now
    return SessionInfo(id=key, user=_user(row), csrf_token=row.csrf_token,
                       created_at=row.session_created_at, last_seen_at=last_seen,
                       expires_at=row.expires_at)


async def valid_session_credentials(conn: AsyncConnection,
                                    ids: set[str]) -> dict[str, tuple[str, str | None]]:
    """Of these session ids, those not ended nor expired whose person is not disabled, with the
    person's role and extension now. (The idle clock is not applied: an open live page is the
    operator at work.)"""
    s, u = web_sessions.c, web_users.c
    rows = await conn.execute(
        sa.select(s.id, s.expires_at, u.role, u.extension, u.disabled)
        .join(web_users, u.id == s.user_id).where(s.id.in_(ids)))
    now = now_utc()
    return {row.id: (row.role, row.extension) for row in rows
            if not row.disabled and now < row.expires_at}


async def extension_has_user(conn: AsyncConnection, extension: str) -> bool:
    """Whether a web user who is not disabled has this extension."""
    u = web_users.c
    found = await conn.execute(sa.select(u.id).where(u.extension == extension,
                                                     u.disabled.is_(False)).limit(1))
    return found.first() is not None


async def end_session(conn: AsyncConnection, session_id: str) -> None:
    await conn.execute(web_sessions.delete().where(web_sessions.c.id == session_id))
