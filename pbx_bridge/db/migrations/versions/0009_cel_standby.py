"""calls.source; the CEL backfill's sweep mark per PBX; the active bridge's lease

Revision ID: 0009_cel_standby
Revises: 0008_crm_done
"""

import sqlalchemy as sa
from alembic import op

from pbx_bridge.db.types import UtcDateTime

revision = "0009_cel_standby"
down_revision = "0008_crm_done"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Every call so far came from AMI.
    op.add_column("calls", sa.Column("source", sa.String(8), nullable=False, server_default="ami"))
    op.create_table(
        "cel_backfill",
        sa.Column("pbx", sa.String(64), primary_key=True),
        sa.Column("swept_until", UtcDateTime, nullable=False),
        sa.Column("updated_at", UtcDateTime, nullable=False),
    )
    op.create_table(
        "bridge_leader",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(128), nullable=False),
        sa.Column("epoch", sa.BigInteger, nullable=False),
        sa.Column("expires_at", UtcDateTime, nullable=False),
        sa.Column("acquired_at", UtcDateTime, nullable=False),
        sa.Column("url", sa.String(255), nullable=False, server_default=""),
    )


def downgrade() -> None:
    op.drop_table("bridge_leader")
    op.drop_table("cel_backfill")
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("source")
