"""HTTP API tables: API tokens, click-to-call requests

Revision ID: 0003_api
Revises: 0002_crm
"""

import sqlalchemy as sa
from alembic import op

from pbx_bridge.db.types import UtcDateTime

revision = "0003_api"
down_revision = "0002_crm"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("extension", sa.String(16), nullable=True),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("revoked_at", UtcDateTime, nullable=True),
        sa.UniqueConstraint("token_hash", name="uq_api_tokens_token_hash"),
    )
    op.create_table(
        "click_to_call_requests",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("token_id", sa.Integer, nullable=True),
        sa.Column("idempotency_key", sa.String(128), nullable=True),
        sa.Column("extension", sa.String(16), nullable=False),
        sa.Column("number", sa.String(32), nullable=False),
        sa.Column("number_entered", sa.String(64), nullable=False),
        sa.Column("dial", sa.String(32), nullable=False),
        sa.Column("client_id", sa.Integer, nullable=True),
        sa.Column("pbx", sa.String(64), nullable=False),
        sa.Column("channel_id", sa.String(64), nullable=False),
        sa.Column("state", sa.String(24), nullable=False),
        sa.Column("reason", sa.String(32), nullable=True),
        sa.Column("call_id", sa.Integer, nullable=True),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("updated_at", UtcDateTime, nullable=False),
        sa.UniqueConstraint("token_id", "idempotency_key", name="uq_c2c_token_idempotency_key"),
    )
    op.create_index("ix_c2c_channel_id", "click_to_call_requests", ["channel_id"])
    op.create_index("ix_c2c_state", "click_to_call_requests", ["state"])


def downgrade() -> None:
    op.drop_table("click_to_call_requests")
    op.drop_table("api_tokens")
