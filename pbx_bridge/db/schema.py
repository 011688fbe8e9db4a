"""The application's own tables: calls, their legs, raw AMI events.

On the shared MetaData (pbx_bridge.db.metadata), like every feature's tables. Libraries (crm_sync,
recordings) define theirs on their own MetaData; the migrations in pbx_bridge/db/migrations create
them all. Cross-library links are plain ids.
"""

from __future__ import annotations

import sqlalchemy as sa

from pbx_bridge.db.metadata import metadata
from pbx_bridge.db.types import UtcDateTime

calls = sa.Table(
    "calls",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("pbx", sa.String(64), nullable=False),
    sa.Column("linkedid", sa.String(128), nullable=False),
    # live while the PBX has channels for it, ended once finalized.
    sa.Column("state", sa.String(16), nullable=False, server_default="live"),
    sa.Column("direction", sa.String(16), nullable=False, server_default="unknown"),
    sa.Column("status", sa.String(16), nullable=True),
    sa.Column("missed", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("customer_number", sa.String(32), nullable=True),
    sa.Column("customer_name", sa.String(255), nullable=True),
    sa.Column("did", sa.String(32), nullable=True),
    sa.Column("dialled", sa.String(64), nullable=True),
    sa.Column("operator", sa.String(16), nullable=True),
    sa.Column("operators_rung", sa.JSON, nullable=False, default=list),
    sa.Column("queue", sa.String(64), nullable=True),
    sa.Column("transfers", sa.JSON, nullable=False, default=list),
    sa.Column("started_at", UtcDateTime, nullable=False),
    sa.Column("answered_at", UtcDateTime, nullable=True),
    sa.Column("ended_at", UtcDateTime, nullable=True),
    sa.Column("wait_seconds", sa.Float, nullable=True),
    sa.Column("talk_seconds", sa.Float, nullable=True),
    sa.Column("click_to_call_id", sa.String(64), nullable=True),
    sa.Column("client_id", sa.Integer, nullable=True),
    sa.Column("client_ambiguous", sa.Boolean, nullable=False, server_default=sa.false()),
    # The call ended while the bridge was not connected: end time is the last one known.
    sa.Column("ended_during_outage", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("tags", sa.JSON, nullable=False, default=list),
    sa.Column("legal_hold", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    # When the CRM stage finished with the ended call (card, timeline, tasks, outbox); NULL on an
    # ended call = still to do (the bridge died between saving the call and its CRM work).
    sa.Column("crm_done_at", UtcDateTime, nullable=True),
    # ami | cel | ami+cel: who told the bridge of the call (pbx_bridge.calls.record.Source).
    sa.Column("source", sa.String(8), nullable=False, server_default="ami"),
    sa.UniqueConstraint("pbx", "linkedid", name="uq_calls_pbx_linkedid"),
)
sa.Index("ix_calls_started_at_id", calls.c.started_at, calls.c.id)
sa.Index("ix_calls_state", calls.c.state)
sa.Index("ix_calls_customer_number", calls.c.customer_number)
# A number's calls newest first (the journal filtered by an exact number, "called back?").
sa.Index("ix_calls_customer_number_started_at", calls.c.customer_number, calls.c.started_at)
sa.Index("ix_calls_operator", calls.c.operator)
sa.Index("ix_calls_client_id", calls.c.client_id)
sa.Index("ix_calls_click_to_call_id", calls.c.click_to_call_id)
sa.Index("ix_calls_crm_done_at", calls.c.crm_done_at)
# The journal read by wait or talk time (GET /api/v1/calls?sort=): on PostgreSQL with NULLS FIRST
# (migration 0015_call_sort), so calls without a value are the smallest there as in SQLite.
sa.Index("ix_calls_wait_seconds_id", calls.c.wait_seconds.nulls_first(), calls.c.id)
sa.Index("ix_calls_talk_seconds_id", calls.c.talk_seconds.nulls_first(), calls.c.id)

call_legs = sa.Table(
    "call_legs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("call_id", sa.Integer, sa.ForeignKey("calls.id", ondelete="CASCADE"), nullable=False),
    sa.Column("uniqueid", sa.String(128), nullable=False),
    sa.Column("channel", sa.String(255), nullable=False),
    # operator | customer | local | other
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("extension", sa.String(16), nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("answered_at", UtcDateTime, nullable=True),
    sa.Column("hungup_at", UtcDateTime, nullable=True),
    sa.Column("hangup_cause", sa.String(64), nullable=True),
    sa.UniqueConstraint("call_id", "uniqueid", name="uq_call_legs_call_uniqueid"),
)

raw_events = sa.Table(
    "raw_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("pbx", sa.String(64), nullable=False),
    sa.Column("received_at", UtcDateTime, nullable=False),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("linkedid", sa.String(128), nullable=True),
    sa.Column("headers", sa.JSON, nullable=False),
)
sa.Index("ix_raw_events_received_at", raw_events.c.received_at)
sa.Index("ix_raw_events_linkedid", raw_events.c.linkedid)

# Per PBX, the number of the last journaled AMI event whose changes are saved (pbx_bridge.ami.
# journal): written in the same transaction as the calls, so it is exact.
journal_checkpoints = sa.Table(
    "ami_journal_checkpoints",
    metadata,
    sa.Column("pbx", sa.String(64), primary_key=True),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
)

# Per PBX, the time up to which Asterisk's CEL has been swept for calls the log lacks
# (pbx_bridge.calls.backfill): the next start sweeps from there, however long it was down.
cel_backfill = sa.Table(
    "cel_backfill",
    metadata,
    sa.Column("pbx", sa.String(64), primary_key=True),
    sa.Column("swept_until", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
)

# Which `serve` process is the active one when several share one PostgreSQL (pbx_bridge.standby):
# a lease the holder renews; a standby takes it over once it has expired by the database's clock.
# `epoch` grows with every new holder: a write is fenced by the epoch it was made under.
bridge_leader = sa.Table(
    "bridge_leader",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("holder", sa.String(128), nullable=False),
    sa.Column("epoch", sa.BigInteger, nullable=False),
    sa.Column("expires_at", UtcDateTime, nullable=False),
    sa.Column("acquired_at", UtcDateTime, nullable=False),
    # Where the holder serves HTTP (for standbys to name the active one).
    sa.Column("url", sa.String(255), nullable=False, server_default=""),
)
