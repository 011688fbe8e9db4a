"""crm_sync's tables: client cards, their phones and e-mails, timeline, tasks, outbox, and the
native CRM connectors' state (their OAuth tokens, the CRM's ids of our calls).

Hand-written migrations: pbx_bridge/db/migrations/versions/0002_crm.py and 0011_crm_connectors.py
(keep them identical to this file).
Links to the application's tables (calls) are plain integer ids, never foreign keys.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

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


clients = sa.Table(
    "clients",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(255), nullable=False),
    # casefolded name for case-insensitive search (SQLite's lower() is ASCII only).
    sa.Column("name_key", sa.String(255), nullable=False),
    sa.Column("company", sa.String(255), nullable=True),
    sa.Column("responsible", sa.String(16), nullable=True),  # operator's extension
    sa.Column("source", sa.String(128), nullable=True),  # ad channel, from the DID map
    sa.Column("tags", sa.JSON, nullable=False),
    sa.Column("notes", sa.Text, nullable=True),
    # Created by a call (policy) rather than by a person or an import.
    sa.Column("auto_created", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    # Never null (= created_at at first) so "most recently active" is one plain ORDER BY.
    sa.Column("last_activity_at", UtcDateTime, nullable=False),
)
sa.Index("ix_clients_name_key", clients.c.name_key)
sa.Index("ix_clients_responsible", clients.c.responsible)
# The card list: most recently active first, filtered by ad channel.
sa.Index("ix_clients_last_activity_at", clients.c.last_activity_at)
sa.Index("ix_clients_source", clients.c.source)

client_phones = sa.Table(
    "client_phones",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("client_id", sa.Integer, sa.ForeignKey("clients.id", ondelete="CASCADE"), nullable=False),
    sa.Column("e164", sa.String(32), nullable=True),  # None: the text did not parse
    sa.Column("raw", sa.String(64), nullable=False),  # as entered
    sa.Column("suffix", sa.String(16), nullable=True),  # last N digits, the fallback key
)
sa.Index("ix_client_phones_e164", client_phones.c.e164)
sa.Index("ix_client_phones_suffix", client_phones.c.suffix)
sa.Index("ix_client_phones_client_id", client_phones.c.client_id)

# One row per number that a call created a card for: the primary key is what makes two
# simultaneous calls from the same new number create exactly one card (the loser's insert fails
# and it re-reads the winner's card). Cards made by people or imports may share numbers freely.
phone_claims = sa.Table(
    "phone_claims",
    metadata,
    sa.Column("e164", sa.String(32), primary_key=True),
    sa.Column("client_id", sa.Integer, sa.ForeignKey("clients.id", ondelete="CASCADE"), nullable=False),
    sa.Column("claimed_at", UtcDateTime, nullable=False),
)

client_emails = sa.Table(
    "client_emails",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("client_id", sa.Integer, sa.ForeignKey("clients.id", ondelete="CASCADE"), nullable=False),
    sa.Column("email", sa.String(255), nullable=False),  # lower-cased
    sa.UniqueConstraint("client_id", "email", name="uq_client_emails_client_email"),
)
sa.Index("ix_client_emails_email", client_emails.c.email)

timeline_entries = sa.Table(
    "timeline_entries",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("client_id", sa.Integer, sa.ForeignKey("clients.id", ondelete="CASCADE"), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),  # call | task | note | recording | transcript
    sa.Column("call_id", sa.Integer, nullable=True),  # calls.id (plain id)
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("at", UtcDateTime, nullable=False),
    # Attaching the same call twice (a replayed end) updates the entry instead of doubling it.
    sa.UniqueConstraint("client_id", "kind", "call_id", name="uq_timeline_entries_client_kind_call"),
)
sa.Index("ix_timeline_entries_client_id_at", timeline_entries.c.client_id, timeline_entries.c.at)
sa.Index("ix_timeline_entries_call_id", timeline_entries.c.call_id)

tasks = sa.Table(
    "tasks",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    # None when the policy created no card: the number still gets its call-back task.
    sa.Column("client_id", sa.Integer, sa.ForeignKey("clients.id", ondelete="CASCADE"), nullable=True),
    sa.Column("number", sa.String(32), nullable=True),  # E.164 of whom to call back
    sa.Column("kind", sa.String(16), nullable=False),  # call_back
    sa.Column("assignee", sa.String(64), nullable=True),  # extension or group name
    sa.Column("status", sa.String(8), nullable=False),  # open | closed
    sa.Column("due_at", UtcDateTime, nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("closed_at", UtcDateTime, nullable=True),
    sa.Column("created_by_call_id", sa.Integer, nullable=True),
    sa.Column("closed_by_call_id", sa.Integer, nullable=True),
    # A hand-made task's text ("send the contract"); call-backs have none.
    sa.Column("title", sa.String(255), nullable=True),
    # ",101,102,": every operator a missed call rang, when its card has no responsible one (each
    # of them sees the task; `assignee` is the first).
    sa.Column("assignees", sa.String(255), nullable=True),
    sa.Column("created_by", sa.String(64), nullable=True),  # who made a task by hand
    # One task per missed call, however often its end is replayed.
    sa.UniqueConstraint("kind", "created_by_call_id", name="uq_tasks_kind_created_by_call"),
)
sa.Index("ix_tasks_client_id_status", tasks.c.client_id, tasks.c.status)
sa.Index("ix_tasks_number_status", tasks.c.number, tasks.c.status)
sa.Index("ix_tasks_assignee_status", tasks.c.assignee, tasks.c.status)
sa.Index("ix_tasks_status_due_at", tasks.c.status, tasks.c.due_at)

outbox = sa.Table(
    "outbox",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("client_key", sa.String(64), nullable=False),  # delivery order is per key
    sa.Column("kind", sa.String(32), nullable=False),  # contact | call
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("next_attempt_at", UtcDateTime, nullable=False),
    sa.Column("delivered_at", UtcDateTime, nullable=True),
    sa.Column("dead", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("last_error", sa.Text, nullable=True),
)
sa.Index("ix_outbox_client_key_id", outbox.c.client_key, outbox.c.id)
sa.Index("ix_outbox_pending", outbox.c.delivered_at, outbox.c.dead, outbox.c.next_attempt_at)

# A native connector's credentials as the CRM last issued them. OAuth refresh tokens are single
# use (Bitrix24 and Kommo both issue a new one with each refresh and void the old), so the current
# pair must survive a restart: the configuration's tokens only seed this row.
crm_connector_auth = sa.Table(
    "crm_connector_auth",
    metadata,
    sa.Column("connector", sa.String(32), primary_key=True),  # bitrix24 | kommo
    sa.Column("access_token", sa.Text, nullable=True),
    sa.Column("refresh_token", sa.Text, nullable=True),
    sa.Column("expires_at", UtcDateTime, nullable=True),
    # Bitrix24: the token its events carry (auth[application_token]), from ONAPPINSTALL.
    sa.Column("application_token", sa.String(255), nullable=True),
    sa.Column("member_id", sa.String(255), nullable=True),
    sa.Column("updated_at", UtcDateTime, nullable=False),
)

# The CRM's id for one of our calls (Bitrix24's CALL_ID from register or from OnExternalCallStart),
# keyed by the PBX's Linkedid: known before our call row exists (click-to-call).
crm_external_calls = sa.Table(
    "crm_external_calls",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("connector", sa.String(32), nullable=False),
    sa.Column("pbx", sa.String(64), nullable=False),
    sa.Column("linkedid", sa.String(128), nullable=False),
    sa.Column("external_id", sa.String(255), nullable=False),
    sa.Column("origin", sa.String(16), nullable=False),  # register | click_to_call
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.UniqueConstraint("connector", "pbx", "linkedid", name="uq_crm_external_calls_call"),
)

# What the library's functions take: the caller's connection or session, inside its transaction.
Db = AsyncConnection | AsyncSession
