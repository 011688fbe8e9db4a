"""Alembic environment: always handed a live connection by pbx_bridge.db.migrate."""

from __future__ import annotations

from alembic import context

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only via pbx_bridge.db.migrate
    raise RuntimeError("run migrations with `pbx-bridge db upgrade`")

context.configure(
    connection=connection,
    render_as_batch=connection.dialect.name == "sqlite",
    transaction_per_migration=False,
)
with context.begin_transaction():
    context.run_migrations()
