"""recordings tables (recordings/schema.py)

Revision ID: 0004_recordings
Revises: 0003_api
"""

revision = "0004_recordings"
down_revision = "0003_api"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Filled in by the feature that owns these tables.
    pass


def downgrade() -> None:
    pass
