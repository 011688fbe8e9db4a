"""Click-to-call requests (migration 0003_api), on the shared MetaData."""

from __future__ import annotations

import sqlalchemy as sa

from pbx_bridge.db.metadata import metadata
from pbx_bridge.db.types import UtcDateTime

click_to_call_requests = sa.Table(
    "click_to_call_requests",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    # Who asked: an API token or a web user (kind), and its id (each kind numbers its own).
    sa.Column("caller_kind", sa.String(8), nullable=False, server_default="token"),
    sa.Column("token_id", sa.Integer, nullable=True),
    sa.Column("idempotency_key", sa.String(128), nullable=True),
    sa.Column("extension", sa.String(16), nullable=False),
    sa.Column("number", sa.String(32), nullable=False),  # E.164
    sa.Column("number_entered", sa.String(64), nullable=False),
    sa.Column("dial", sa.String(32), nullable=False),  # what the PBX dials (Exten)
    sa.Column("client_id", sa.Integer, nullable=True),
    sa.Column("pbx", sa.String(64), nullable=False),
    # The Originate's ChannelId: the operator leg's Uniqueid and the call's Linkedid.
    sa.Column("channel_id", sa.String(64), nullable=False),
    sa.Column("state", sa.String(24), nullable=False),
    sa.Column("reason", sa.String(32), nullable=True),
    sa.Column("call_id", sa.Integer, nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    # One request per (caller, key): a repeated POST returns it instead of calling again.
    sa.UniqueConstraint("caller_kind", "token_id", "idempotency_key",
                        name="uq_c2c_caller_idempotency_key"),
)
sa.Index("ix_c2c_channel_id", click_to_call_requests.c.channel_id)
sa.Index("ix_c2c_state", click_to_call_requests.c.state)
