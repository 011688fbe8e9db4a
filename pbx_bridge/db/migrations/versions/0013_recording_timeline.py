"""recordings.timeline: the call's answer, end and the times the customer talked with someone

Revision ID: 0013_recording_timeline
Revises: 0010_ui
"""

import sqlalchemy as sa
from alembic import op

revision = "0013_recording_timeline"
down_revision = "0010_ui"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Rows from before have none: their segments are placed by their own start times.
    op.add_column("recordings", sa.Column("timeline", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("recordings") as batch:
        batch.drop_column("timeline")
