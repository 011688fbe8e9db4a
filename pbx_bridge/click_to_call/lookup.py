"""What other features may ask of click-to-call's requests, so they need not read its table."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from pbx_bridge.click_to_call.schema import click_to_call_requests


async def idempotency_key(conn: AsyncConnection, request_id: str) -> str | None:
    """The Idempotency-Key the request was placed with (None: none, or no such request)."""
    key = (await conn.execute(sa.select(click_to_call_requests.c.idempotency_key).where(
        click_to_call_requests.c.id == request_id))).scalar()
    return None if key is None else str(key)
