"""crm_sync tables: clients, phones, timeline, tasks, outbox (crm_sync/schema.py)

Revision ID: 0002_crm
Revises: 0001_core
"""

revision = "0002_crm"
down_revision = "0001_core"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Filled in by the feature that owns these tables.
    pass


def downgrade() -> None:
    pass
