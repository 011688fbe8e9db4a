"""web UI (issue 14): partial-number search indexes, hand-made and shared tasks, card browsing

Revision ID: 0010_ui
Revises: 0011_crm_connectors

Partial-number search ("any 4 or more consecutive digits"): on PostgreSQL trigram GIN indexes
(pg_trgm) that serve `LIKE '%digits%'`; on SQLite external-content FTS5 tables with the trigram
tokenizer, kept in sync by triggers, queried with a phrase of the digits (consecutive trigrams =
the substring). Their names are in pbx_bridge/calls/number_search.py (SEARCH_OBJECTS).
"""

import sqlalchemy as sa
from alembic import op

revision = "0010_ui"
down_revision = "0011_crm_connectors"
branch_labels = None
depends_on = None

# (FTS table, content table, indexed columns)
_SQLITE_FTS = (
    ("calls_number_fts", "calls", ("customer_number",)),
    ("client_phones_fts", "client_phones", ("e164", "suffix")),
)
_PG_TRGM = (
    ("ix_calls_customer_number_trgm", "calls", "customer_number"),
    ("ix_client_phones_e164_trgm", "client_phones", "e164"),
    ("ix_client_phones_suffix_trgm", "client_phones", "suffix"),
)


def _sqlite_fts(name: str, table: str, columns: tuple[str, ...]) -> None:
    cols = ", ".join(columns)
    new = ", ".join(f"new.{c}" for c in columns)
    old = ", ".join(f"old.{c}" for c in columns)
    changed = " OR ".join(f"old.{c} IS NOT new.{c}" for c in columns)
    op.execute(f"CREATE VIRTUAL TABLE {name} USING fts5({cols}, content='{table}', "
               f"content_rowid='id', tokenize='trigram')")
    op.execute(f"INSERT INTO {name}({name}) VALUES ('rebuild')")
    op.execute(f"CREATE TRIGGER {name}_insert AFTER INSERT ON {table} BEGIN "
               f"INSERT INTO {name}(rowid, {cols}) VALUES (new.id, {new}); END")
    op.execute(f"CREATE TRIGGER {name}_delete AFTER DELETE ON {table} BEGIN "
               f"INSERT INTO {name}({name}, rowid, {cols}) VALUES ('delete', old.id, {old}); END")
    # Calls are upserted many times while they ring: only a change of the number costs anything.
    op.execute(f"CREATE TRIGGER {name}_update AFTER UPDATE ON {table} WHEN {changed} BEGIN "
               f"INSERT INTO {name}({name}, rowid, {cols}) VALUES ('delete', old.id, {old}); "
               f"INSERT INTO {name}(rowid, {cols}) VALUES (new.id, {new}); END")


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        # What a hand-made task says ("send the contract"); call-backs have none.
        batch.add_column(sa.Column("title", sa.String(255), nullable=True))
        # ",101,102,": every operator a missed call rang, when the card has no responsible one.
        batch.add_column(sa.Column("assignees", sa.String(255), nullable=True))
        batch.add_column(sa.Column("created_by", sa.String(64), nullable=True))
    op.create_index("ix_tasks_status_due_at", "tasks", ["status", "due_at"])
    op.create_index("ix_clients_last_activity_at", "clients", ["last_activity_at"])
    op.create_index("ix_clients_source", "clients", ["source"])
    op.create_index("ix_calls_customer_number_started_at", "calls", ["customer_number", "started_at"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        for index, table, column in _PG_TRGM:
            op.execute(f"CREATE INDEX {index} ON {table} USING gin ({column} gin_trgm_ops)")
    else:
        for name, table, columns in _SQLITE_FTS:
            _sqlite_fts(name, table, columns)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for index, _table, _column in _PG_TRGM:
            op.execute(f"DROP INDEX IF EXISTS {index}")
    else:
        for name, _table, _columns in _SQLITE_FTS:
            for suffix in ("insert", "delete", "update"):
                op.execute(f"DROP TRIGGER IF EXISTS {name}_{suffix}")
            op.execute(f"DROP TABLE IF EXISTS {name}")
    op.drop_index("ix_calls_customer_number_started_at", "calls")
    op.drop_index("ix_clients_source", "clients")
    op.drop_index("ix_clients_last_activity_at", "clients")
    op.drop_index("ix_tasks_status_due_at", "tasks")
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("created_by")
        batch.drop_column("assignees")
        batch.drop_column("title")
