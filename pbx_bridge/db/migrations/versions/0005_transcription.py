"""transcription jobs, transcripts, full-text search (recordings/schema.py)

Revision ID: 0005_transcription
Revises: 0004_recordings
"""

revision = "0005_transcription"
down_revision = "0004_recordings"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Filled in by the feature that owns these tables.
    pass


def downgrade() -> None:
    pass
