"""web UI tables: people who sign in, their sessions

Revision ID: 0006_web
Revises: 0005_transcription
"""

revision = "0006_web"
down_revision = "0005_transcription"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Filled in by the web UI feature.
    pass


def downgrade() -> None:
    pass
