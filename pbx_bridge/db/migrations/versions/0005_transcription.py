"""transcription jobs, transcripts, full-text search (recordings/transcription/schema.py)

Revision ID: 0005_transcription
Revises: 0004_recordings
"""

import sqlalchemy as sa
from alembic import op

from recordings.transcription.schema import UtcDateTime

revision = "0005_transcription"
down_revision = "0004_recordings"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "transcription_jobs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("call_id", sa.Integer, nullable=False),
        sa.Column("wav_path", sa.String(1024), nullable=False),
        sa.Column("state", sa.String(16), nullable=False, server_default="queued"),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("lease_owner", sa.String(128), nullable=True),
        sa.Column("lease_expires_at", UtcDateTime, nullable=True),
        sa.Column("heartbeat_at", UtcDateTime, nullable=True),
        sa.Column("next_attempt_at", UtcDateTime, nullable=False),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("started_at", UtcDateTime, nullable=True),
        sa.Column("finished_at", UtcDateTime, nullable=True),
        sa.Column("updated_at", UtcDateTime, nullable=False),
    )
    op.create_index("ix_transcription_jobs_state_next", "transcription_jobs",
                    ["state", "next_attempt_at"])
    op.create_index("ix_transcription_jobs_call_id", "transcription_jobs", ["call_id"])
    op.create_index("ix_transcription_jobs_finished_at", "transcription_jobs", ["finished_at"])
    op.create_table(
        "transcripts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("call_id", sa.Integer, nullable=False),
        sa.Column("job_id", sa.Integer, nullable=True),
        sa.Column("turns", sa.JSON, nullable=False),
        sa.Column("plain_text", sa.Text, nullable=False),
        sa.Column("analytics", sa.JSON, nullable=False),
        sa.Column("language", sa.String(16), nullable=False),
        sa.Column("model", sa.String(255), nullable=False),
        sa.Column("duration_seconds", sa.Float, nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.UniqueConstraint("call_id", name="uq_transcripts_call_id"),
    )
    if op.get_bind().dialect.name == "postgresql":
        # 'simple': no stemming, so any language's words match as written (lower-cased).
        op.execute(
            "ALTER TABLE transcripts ADD COLUMN search_vector tsvector "
            "GENERATED ALWAYS AS (to_tsvector('simple', plain_text)) STORED"
        )
        op.execute("CREATE INDEX ix_transcripts_search_vector ON transcripts USING gin (search_vector)")
    else:
        # External-content FTS5 index over transcripts.plain_text, kept in sync by triggers.
        op.execute(
            "CREATE VIRTUAL TABLE transcripts_fts USING fts5(plain_text, content='transcripts', "
            "content_rowid='id', tokenize='unicode61 remove_diacritics 2')"
        )
        op.execute(
            "CREATE TRIGGER transcripts_fts_insert AFTER INSERT ON transcripts BEGIN "
            "INSERT INTO transcripts_fts(rowid, plain_text) VALUES (new.id, new.plain_text); END"
        )
        op.execute(
            "CREATE TRIGGER transcripts_fts_delete AFTER DELETE ON transcripts BEGIN "
            "INSERT INTO transcripts_fts(transcripts_fts, rowid, plain_text) "
            "VALUES ('delete', old.id, old.plain_text); END"
        )
        op.execute(
            "CREATE TRIGGER transcripts_fts_update AFTER UPDATE ON transcripts BEGIN "
            "INSERT INTO transcripts_fts(transcripts_fts, rowid, plain_text) "
            "VALUES ('delete', old.id, old.plain_text); "
            "INSERT INTO transcripts_fts(rowid, plain_text) VALUES (new.id, new.plain_text); END"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for trigger in ("transcripts_fts_insert", "transcripts_fts_delete", "transcripts_fts_update"):
            op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
        op.execute("DROP TABLE IF EXISTS transcripts_fts")
    op.drop_table("transcripts")
    op.drop_table("transcription_jobs")
