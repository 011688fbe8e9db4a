"""recordings tables (recordings/schema.py)

Revision ID: 0004_recordings
Revises: 0003_api
"""

import sqlalchemy as sa
from alembic import op

from recordings.schema import UtcDateTime

revision = "0004_recordings"
down_revision = "0003_api"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "recordings",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("call_id", sa.Integer, nullable=False),
        sa.Column("pbx", sa.String(64), nullable=False),
        sa.Column("linkedid", sa.String(128), nullable=False),
        sa.Column("state", sa.String(16), nullable=False, server_default="recording"),
        sa.Column("rule", sa.String(96), nullable=False, server_default="default"),
        sa.Column("segments", sa.JSON, nullable=False),
        sa.Column("stored_path", sa.String(512), nullable=True),
        sa.Column("format", sa.String(16), nullable=True),
        sa.Column("channels", sa.Integer, nullable=True),
        sa.Column("sample_rate", sa.Integer, nullable=True),
        sa.Column("duration_seconds", sa.Float, nullable=True),
        sa.Column("size_bytes", sa.BigInteger, nullable=True),
        sa.Column("sha256", sa.String(64), nullable=True),
        sa.Column("compressed_path", sa.String(512), nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", UtcDateTime, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("updated_at", UtcDateTime, nullable=False),
        sa.Column("ready_at", UtcDateTime, nullable=True),
        sa.Column("deleted_at", UtcDateTime, nullable=True),
        sa.UniqueConstraint("call_id", name="uq_recordings_call_id"),
    )
    op.create_index(
        "ix_recordings_state_next_attempt_at", "recordings", ["state", "next_attempt_at"]
    )
    op.create_index("ix_recordings_created_at", "recordings", ["created_at"])


def downgrade() -> None:
    op.drop_table("recordings")
