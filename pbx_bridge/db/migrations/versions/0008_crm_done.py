"""calls.crm_done_at: the CRM stage's work on an ended call is done

Revision ID: 0008_crm_done
Revises: 0007_journal
"""

import sqlalchemy as sa
from alembic import op

from pbx_bridge.db.types import UtcDateTime

revision = "0008_crm_done"
down_revision = "0007_journal"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("calls", sa.Column("crm_done_at", UtcDateTime, nullable=True))
    op.create_index("ix_calls_crm_done_at", "calls", ["crm_done_at"])
    # Calls that ended before this version had their CRM work done as they ended.
    op.execute("UPDATE calls SET crm_done_at = updated_at WHERE state = 'ended'")


def downgrade() -> None:
    op.drop_index("ix_calls_crm_done_at", "calls")
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("crm_done_at")
