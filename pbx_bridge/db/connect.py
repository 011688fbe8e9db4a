"""Opening the database for a process (serve or a command): reachable, and its schema current.

Here in the core, not in the command line, so the running bridge does not import the CLI.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from pbx_bridge.config import Settings
from pbx_bridge.db import migrate
from pbx_bridge.db.engine import make_engine
from pbx_bridge.errors import UserError


@asynccontextmanager
async def database(settings: Settings, *, check_schema: bool = True) -> AsyncIterator[AsyncEngine]:
    """Open the database; refuse an out-of-date schema when asked to check it."""
    engine = make_engine(settings.database_url, echo=settings.database.echo)
    try:
        try:
            async with engine.connect() as conn:
                await conn.execute(sa.text("SELECT 1"))
        except (OSError, sa.exc.DBAPIError) as exc:
            raise UserError(f"database unavailable ({_describe(exc)})") from None
        if check_schema and not await migrate.is_up_to_date(engine):
            if settings.database.auto_upgrade:
                await migrate.upgrade(engine)
            else:
                raise UserError(
                    "database schema is out of date: run `pbx-bridge db upgrade` "
                    "(or set database.auto_upgrade = true)"
                )
        yield engine
    finally:
        await engine.dispose()


def _describe(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()
    return f"{type(orig).__name__}: {text[0] if text else ''}"
