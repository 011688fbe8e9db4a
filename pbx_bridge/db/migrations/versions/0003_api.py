"""HTTP API tables: tokens, click-to-call requests, web users and sessions

Revision ID: 0003_api
Revises: 0002_crm
"""

revision = "0003_api"
down_revision = "0002_crm"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Filled in by the feature that owns these tables.
    pass


def downgrade() -> None:
    pass
