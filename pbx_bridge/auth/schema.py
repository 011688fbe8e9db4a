"""API tokens (migration 0003_api), on the shared MetaData."""

from __future__ import annotations

import sqlalchemy as sa

from pbx_bridge.db.metadata import metadata
from pbx_bridge.db.types import UtcDateTime

api_tokens = sa.Table(
    "api_tokens",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("extension", sa.String(16), nullable=True),
    # SHA-256 (hex) of the token; the token itself is shown once and never stored.
    sa.Column("token_hash", sa.String(64), nullable=False),
    # The first characters of the token, to tell tokens apart in `tokens list`.
    sa.Column("prefix", sa.String(16), nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("revoked_at", UtcDateTime, nullable=True),
    sa.UniqueConstraint("token_hash", name="uq_api_tokens_token_hash"),
)

