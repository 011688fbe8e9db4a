"""core: calls, call legs, raw AMI events

Revision ID: 0001_core
Revises:
"""

import sqlalchemy as sa
from alembic import op

from pbx_bridge.db.types import UtcDateTime

revision = "0001_core"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "calls",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("pbx", sa.String(64), nullable=False),
        sa.Column("linkedid", sa.String(128), nullable=False),
        sa.Column("state", sa.String(16), nullable=False, server_default="live"),
        sa.Column("direction", sa.String(16), nullable=False, server_default="unknown"),
        sa.Column("status", sa.String(16), nullable=True),
        sa.Column("missed", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("customer_number", sa.String(32), nullable=True),
        sa.Column("customer_name", sa.String(255), nullable=True),
        sa.Column("did", sa.String(32), nullable=True),
        sa.Column("dialled", sa.String(64), nullable=True),
        sa.Column("operator", sa.String(16), nullable=True),
        sa.Column("operators_rung", sa.JSON, nullable=False),
        sa.Column("queue", sa.String(64), nullable=True),
        sa.Column("transfers", sa.JSON, nullable=False),
        sa.Column("started_at", UtcDateTime, nullable=False),
        sa.Column("answered_at", UtcDateTime, nullable=True),
        sa.Column("ended_at", UtcDateTime, nullable=True),
        sa.Column("wait_seconds", sa.Float, nullable=True),
        sa.Column("talk_seconds", sa.Float, nullable=True),
        sa.Column("click_to_call_id", sa.String(64), nullable=True),
        sa.Column("client_id", sa.Integer, nullable=True),
        sa.Column("client_ambiguous", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("ended_during_outage", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("tags", sa.JSON, nullable=False),
        sa.Column("legal_hold", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("updated_at", UtcDateTime, nullable=False),
        sa.UniqueConstraint("pbx", "linkedid", name="uq_calls_pbx_linkedid"),
    )
    op.create_index("ix_calls_started_at_id", "calls", ["started_at", "id"])
    op.create_index("ix_calls_state", "calls", ["state"])
    op.create_index("ix_calls_customer_number", "calls", ["customer_number"])
    op.create_index("ix_calls_operator", "calls", ["operator"])
    op.create_index("ix_calls_client_id", "calls", ["client_id"])
    op.create_index("ix_calls_click_to_call_id", "calls", ["click_to_call_id"])
    op.create_table(
        "call_legs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "call_id",
            sa.Integer,
            sa.ForeignKey("calls.id", ondelete="CASCADE", name="fk_call_legs_call_id_calls"),
            nullable=False,
        ),
        sa.Column("uniqueid", sa.String(128), nullable=False),
        sa.Column("channel", sa.String(255), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("extension", sa.String(16), nullable=True),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("answered_at", UtcDateTime, nullable=True),
        sa.Column("hungup_at", UtcDateTime, nullable=True),
        sa.Column("hangup_cause", sa.String(64), nullable=True),
        sa.UniqueConstraint("call_id", "uniqueid", name="uq_call_legs_call_uniqueid"),
    )
    op.create_table(
        "raw_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("pbx", sa.String(64), nullable=False),
        sa.Column("received_at", UtcDateTime, nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("linkedid", sa.String(128), nullable=True),
        sa.Column("headers", sa.JSON, nullable=False),
    )
    op.create_index("ix_raw_events_received_at", "raw_events", ["received_at"])
    op.create_index("ix_raw_events_linkedid", "raw_events", ["linkedid"])


def downgrade() -> None:
    op.drop_table("raw_events")
    op.drop_table("call_legs")
    op.drop_table("calls")
