"""The recordings table: one row per recorded call, from the first MixMonitor to deletion.

A call's id is a plain integer here (no foreign key): the library does not know the
application's tables. States:

- ``recording``: MixMonitor is running (segments are listed in ``segments``).
- ``processing``: the call ended; the spool files are being turned into the WAV (with retries).
- ``ready``: the WAV is stored and verified; the spool files are gone.
- ``missing``: after every retry the spool files were missing or empty.
- ``truncated``: a file ended in a partial frame; the whole frames were stored, the spool files kept.
- ``failed``: conversion failed for another reason (disk full, unreadable file, ...).
- ``deleted``: removed by retention (the row stays as an audit trail).
- ``not_recorded``: the policy wanted it, but nobody could start MixMonitor (the call was only
  learnt of afterwards, from Asterisk's CEL, while the bridge was not connected).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

import sqlalchemy as sa

RecordingState = Literal["recording", "processing", "ready", "missing", "truncated", "failed", "deleted",
                         "not_recorded"]
STATES: tuple[RecordingState, ...] = (
    "recording", "processing", "ready", "missing", "truncated", "failed", "deleted", "not_recorded",
)
# States with a playable WAV.
PLAYABLE: tuple[RecordingState, ...] = ("ready", "truncated")

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING)


class UtcDateTime(sa.types.TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


recordings = sa.Table(
    "recordings",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("call_id", sa.Integer, nullable=False),
    sa.Column("pbx", sa.String(64), nullable=False),
    sa.Column("linkedid", sa.String(128), nullable=False),
    sa.Column("state", sa.String(16), nullable=False, server_default="recording"),
    # Which policy rule decided to record ("default", "did:+7495...", "operator:101"): retention
    # looks the rule's current number of days up, so a config change applies to old recordings.
    sa.Column("rule", sa.String(96), nullable=False, server_default="default"),
    # MixMonitor segments in order: [{"index", "mode", "channel", "operator", "files": {...},
    # "started_at", "perspective", "recorded"}]; file names are relative to the spool dir.
    sa.Column("segments", sa.JSON, nullable=False),
    # The call's timeline (recordings.timeline.CallTimeline.to_dict): answer, end, and when the
    # customer talked with whom; written when the call ends. NULL = not known.
    sa.Column("timeline", sa.JSON, nullable=True),
    # The WAV, relative to the recordings dir: YYYY/MM/DD/<call id>.wav.
    sa.Column("stored_path", sa.String(512), nullable=True),
    sa.Column("format", sa.String(16), nullable=True),
    sa.Column("channels", sa.Integer, nullable=True),
    sa.Column("sample_rate", sa.Integer, nullable=True),
    sa.Column("duration_seconds", sa.Float, nullable=True),
    sa.Column("size_bytes", sa.BigInteger, nullable=True),
    sa.Column("sha256", sa.String(64), nullable=True),
    sa.Column("compressed_path", sa.String(512), nullable=True),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt_at", UtcDateTime, nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.Column("ready_at", UtcDateTime, nullable=True),
    sa.Column("deleted_at", UtcDateTime, nullable=True),
    sa.UniqueConstraint("call_id", name="uq_recordings_call_id"),
)
sa.Index("ix_recordings_state_next_attempt_at", recordings.c.state, recordings.c.next_attempt_at)
sa.Index("ix_recordings_created_at", recordings.c.created_at)
