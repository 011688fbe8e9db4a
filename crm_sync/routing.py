"""Routing for the dialplan: the extension of the operator responsible for a caller."""

from __future__ import annotations

from crm_sync.matching import MatchSettings, match_number
from crm_sync.schema import Db


async def responsible_for(db: Db, number: str | None, settings: MatchSettings) -> str | None:
    """The matched card's responsible operator (the most recently active card when several
    match); None for unknown callers, extensions and cards without one."""
    match = await match_number(db, number, settings)
    return None if match.client is None else match.client.responsible
