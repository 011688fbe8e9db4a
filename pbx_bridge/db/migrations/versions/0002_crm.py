"""crm_sync tables: clients, phones, timeline, tasks, outbox (crm_sync/schema.py)

Revision ID: 0002_crm
Revises: 0001_core
"""

import sqlalchemy as sa
from alembic import op

from crm_sync.schema import UtcDateTime

revision = "0002_crm"
down_revision = "0001_core"
branch_labels = None
depends_on = None


def _client_fk(table: str) -> sa.ForeignKey:
    return sa.ForeignKey("clients.id", ondelete="CASCADE", name=f"fk_{table}_client_id_clients")


def upgrade() -> None:
    op.create_table(
        "clients",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("name_key", sa.String(255), nullable=False),
        sa.Column("company", sa.String(255), nullable=True),
        sa.Column("responsible", sa.String(16), nullable=True),
        sa.Column("source", sa.String(128), nullable=True),
        sa.Column("tags", sa.JSON, nullable=False),
        sa.Column("notes", sa.Text, nullable=True),
        sa.Column("auto_created", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("updated_at", UtcDateTime, nullable=False),
        sa.Column("last_activity_at", UtcDateTime, nullable=False),
    )
    op.create_index("ix_clients_name_key", "clients", ["name_key"])
    op.create_index("ix_clients_responsible", "clients", ["responsible"])

    op.create_table(
        "client_phones",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("client_id", sa.Integer, _client_fk("client_phones"), nullable=False),
        sa.Column("e164", sa.String(32), nullable=True),
        sa.Column("raw", sa.String(64), nullable=False),
        sa.Column("suffix", sa.String(16), nullable=True),
    )
    op.create_index("ix_client_phones_e164", "client_phones", ["e164"])
    op.create_index("ix_client_phones_suffix", "client_phones", ["suffix"])
    op.create_index("ix_client_phones_client_id", "client_phones", ["client_id"])

    op.create_table(
        "phone_claims",
        sa.Column("e164", sa.String(32), primary_key=True),
        sa.Column("client_id", sa.Integer, _client_fk("phone_claims"), nullable=False),
        sa.Column("claimed_at", UtcDateTime, nullable=False),
    )

    op.create_table(
        "client_emails",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("client_id", sa.Integer, _client_fk("client_emails"), nullable=False),
        sa.Column("email", sa.String(255), nullable=False),
        sa.UniqueConstraint("client_id", "email", name="uq_client_emails_client_email"),
    )
    op.create_index("ix_client_emails_email", "client_emails", ["email"])

    op.create_table(
        "timeline_entries",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("client_id", sa.Integer, _client_fk("timeline_entries"), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("call_id", sa.Integer, nullable=True),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("at", UtcDateTime, nullable=False),
        sa.UniqueConstraint("client_id", "kind", "call_id", name="uq_timeline_entries_client_kind_call"),
    )
    op.create_index("ix_timeline_entries_client_id_at", "timeline_entries", ["client_id", "at"])
    op.create_index("ix_timeline_entries_call_id", "timeline_entries", ["call_id"])

    op.create_table(
        "tasks",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("client_id", sa.Integer, _client_fk("tasks"), nullable=True),
        sa.Column("number", sa.String(32), nullable=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("assignee", sa.String(64), nullable=True),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("due_at", UtcDateTime, nullable=True),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("closed_at", UtcDateTime, nullable=True),
        sa.Column("created_by_call_id", sa.Integer, nullable=True),
        sa.Column("closed_by_call_id", sa.Integer, nullable=True),
        sa.UniqueConstraint("kind", "created_by_call_id", name="uq_tasks_kind_created_by_call"),
    )
    op.create_index("ix_tasks_client_id_status", "tasks", ["client_id", "status"])
    op.create_index("ix_tasks_number_status", "tasks", ["number", "status"])
    op.create_index("ix_tasks_assignee_status", "tasks", ["assignee", "status"])

    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("client_key", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("next_attempt_at", UtcDateTime, nullable=False),
        sa.Column("delivered_at", UtcDateTime, nullable=True),
        sa.Column("dead", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("last_error", sa.Text, nullable=True),
    )
    op.create_index("ix_outbox_client_key_id", "outbox", ["client_key", "id"])
    op.create_index("ix_outbox_pending", "outbox", ["delivered_at", "dead", "next_attempt_at"])


def downgrade() -> None:
    op.drop_table("outbox")
    op.drop_table("tasks")
    op.drop_table("timeline_entries")
    op.drop_table("client_emails")
    op.drop_table("phone_claims")
    op.drop_table("client_phones")
    op.drop_table("clients")
