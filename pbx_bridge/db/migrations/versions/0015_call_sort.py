"""calls: indexes for reading the journal by wait or talk time (GET /api/v1/calls?sort=)

Revision ID: 0015_call_sort
Revises: 0014_sec_b
"""

import sqlalchemy as sa
from alembic import op

revision = "0015_call_sort"
down_revision = "0014_sec_b"
branch_labels = None
depends_on = None

COLUMNS = ("wait_seconds", "talk_seconds")


def upgrade() -> None:
    # Calls without the value sort as the smallest (pbx_bridge.calls.query.Sort): SQLite's order
    # already puts NULLs first; PostgreSQL's puts them last unless told. Read forwards or backwards,
    # the index is then the page order in both directions.
    postgres = op.get_bind().dialect.name == "postgresql"
    for column in COLUMNS:
        first = sa.text(f"{column} NULLS FIRST") if postgres else column
        op.create_index(f"ix_calls_{column}_id", "calls", [first, "id"])


def downgrade() -> None:
    for column in COLUMNS:
        op.drop_index(f"ix_calls_{column}_id", table_name="calls")
