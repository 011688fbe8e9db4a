"""Tables of the transcription feature: the durable job queue and the transcripts.

Full-text search objects are dialect-specific and created only by the migration
(0005_transcription): on SQLite an FTS5 table kept in sync by triggers, on PostgreSQL a generated
tsvector column with a GIN index. They are not declared here because SQLAlchemy cannot express
them portably; FTS_OBJECTS names them so the schema comparison can leave them out.
"""

from __future__ import annotations

import sqlalchemy as sa

from recordings.schema import NAMING, UtcDateTime

# The same column type and naming convention as the rest of the recordings library.
metadata = sa.MetaData(naming_convention=NAMING)


JOB_STATES = ("queued", "running", "done", "failed")

transcription_jobs = sa.Table(
    "transcription_jobs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    # The call's id in the application's calls table (a plain id: this library has no calls).
    sa.Column("call_id", sa.Integer, nullable=False),
    sa.Column("wav_path", sa.String(1024), nullable=False),
    # queued -> running -> done | failed; running -> queued again on a retryable error.
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
# The claim query: the next runnable job in order.
sa.Index("ix_transcription_jobs_state_next", transcription_jobs.c.state,
         transcription_jobs.c.next_attempt_at)
sa.Index("ix_transcription_jobs_call_id", transcription_jobs.c.call_id)
sa.Index("ix_transcription_jobs_finished_at", transcription_jobs.c.finished_at)

transcripts = sa.Table(
    "transcripts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("call_id", sa.Integer, nullable=False),
    sa.Column("job_id", sa.Integer, nullable=True),
    # [{speaker, start, end, text, words: [{word, start, end, conf}]}]
    sa.Column("turns", sa.JSON, nullable=False),
    # One line per turn, no speaker labels: what full-text search indexes.
    sa.Column("plain_text", sa.Text, nullable=False),
    sa.Column("analytics", sa.JSON, nullable=False),
    sa.Column("language", sa.String(16), nullable=False),
    sa.Column("model", sa.String(255), nullable=False),
    sa.Column("duration_seconds", sa.Float, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.UniqueConstraint("call_id", name="uq_transcripts_call_id"),
)

# Created by the migration only (see the module docstring).
SQLITE_FTS_TABLE = "transcripts_fts"
SQLITE_FTS_OBJECTS = frozenset(
    {SQLITE_FTS_TABLE} | {f"{SQLITE_FTS_TABLE}_{s}" for s in ("data", "idx", "docsize", "config",
                                                                "content")}
)
PG_SEARCH_COLUMN = "search_vector"
PG_SEARCH_INDEX = "ix_transcripts_search_vector"
FTS_OBJECTS = SQLITE_FTS_OBJECTS | {PG_SEARCH_COLUMN, PG_SEARCH_INDEX}
