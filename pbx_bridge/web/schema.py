"""The web UI's tables: people who sign in, and their sessions (on the shared MetaData)."""

from __future__ import annotations

import sqlalchemy as sa

from pbx_bridge.db.metadata import metadata
from pbx_bridge.db.types import UtcDateTime

web_users = sa.Table(
    "web_users",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("username", sa.String(64), nullable=False),
    # argon2id hash in PHC string form (parameters included, so they can change later).
    sa.Column("password_hash", sa.String(255), nullable=False),
    # admin | manager | operator (the crm role is for machines, never for people).
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("extension", sa.String(16), nullable=True),
    # ru | en; NULL = from the browser's Accept-Language.
    sa.Column("language", sa.String(8), nullable=True),
    sa.Column("disabled", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("last_login_at", UtcDateTime, nullable=True),
    sa.UniqueConstraint("username", name="uq_web_users_username"),
)

web_sessions = sa.Table(
    "web_sessions",
    metadata,
    # SHA-256 of the cookie value: a copy of the table does not let anyone sign in.
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column(
        "user_id",
        sa.Integer,
        sa.ForeignKey("web_users.id", ondelete="CASCADE", name="fk_web_sessions_user_id_web_users"),
        nullable=False,
    ),
    sa.Column("csrf_token", sa.String(64), nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("last_seen_at", UtcDateTime, nullable=False),
    # Absolute end of the session; idle expiry is last_seen_at + the configured idle time.
    sa.Column("expires_at", UtcDateTime, nullable=False),
)
sa.Index("ix_web_sessions_user_id", web_sessions.c.user_id)
sa.Index("ix_web_sessions_expires_at", web_sessions.c.expires_at)
