"""Native CRM connectors (Bitrix24, Kommo): their tokens and the CRM's ids of our calls
(crm_sync/schema.py: crm_connector_auth, crm_external_calls)

Revision ID: 0011_crm_connectors
Revises: 0009_cel_standby
"""

import sqlalchemy as sa
from alembic import op

from crm_sync.schema import UtcDateTime

revision = "0011_crm_connectors"
down_revision = "0009_cel_standby"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "crm_connector_auth",
        sa.Column("connector", sa.String(32), primary_key=True),
        sa.Column("access_token", sa.Text, nullable=True),
        sa.Column("refresh_token", sa.Text, nullable=True),
        sa.Column("expires_at", UtcDateTime, nullable=True),
        sa.Column("application_token", sa.String(255), nullable=True),
        sa.Column("member_id", sa.String(255), nullable=True),
        sa.Column("updated_at", UtcDateTime, nullable=False),
    )
    op.create_table(
        "crm_external_calls",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("connector", sa.String(32), nullable=False),
        sa.Column("pbx", sa.String(64), nullable=False),
        sa.Column("linkedid", sa.String(128), nullable=False),
        sa.Column("external_id", sa.String(255), nullable=False),
        sa.Column("origin", sa.String(16), nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.UniqueConstraint("connector", "pbx", "linkedid", name="uq_crm_external_calls_call"),
    )


def downgrade() -> None:
    op.drop_table("crm_external_calls")
    op.drop_table("crm_connector_auth")
