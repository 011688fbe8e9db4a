"""AMI journal checkpoints: the last journaled event applied, per PBX

Revision ID: 0007_journal
Revises: 0006_web
"""

import sqlalchemy as sa
from alembic import op

from pbx_bridge.db.types import UtcDateTime

revision = "0007_journal"
down_revision = "0006_web"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ami_journal_checkpoints",
        sa.Column("pbx", sa.String(64), primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("updated_at", UtcDateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("ami_journal_checkpoints")
