"""click_to_call_requests.caller_kind: idempotency keys per kind of caller (API token or person)

API tokens and web users number their ids separately: token 1 and user 1 must not share a key.
Rows from before were all recorded under token_id; they keep the kind 'token'.

Revision ID: 0014_sec_b
Revises: 0013_recording_timeline
"""

import sqlalchemy as sa
from alembic import op

revision = "0014_sec_b"
down_revision = "0013_recording_timeline"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("click_to_call_requests") as batch:
        batch.add_column(sa.Column("caller_kind", sa.String(8), nullable=False, server_default="token"))
        batch.drop_constraint("uq_c2c_token_idempotency_key", type_="unique")
        batch.create_unique_constraint("uq_c2c_caller_idempotency_key",
                                       ["caller_kind", "token_id", "idempotency_key"])


def downgrade() -> None:
    with op.batch_alter_table("click_to_call_requests") as batch:
        batch.drop_constraint("uq_c2c_caller_idempotency_key", type_="unique")
        batch.create_unique_constraint("uq_c2c_token_idempotency_key", ["token_id", "idempotency_key"])
        batch.drop_column("caller_kind")
