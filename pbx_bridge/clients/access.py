"""Who may see and change which client card (issue 18, point 3; README "Roles").

admin and crm: everything. manager: every card, including `responsible`; never closes tasks.
operator (semi-trusted): creates cards; reads and edits only the cards they are responsible for,
cards with no responsible, and cards a call of theirs touched (they answered it or their phone was
rung or placed it); never changes `responsible`; on a timeline sees only their own calls; closes
only their own tasks (and the shared call-back group's, which every operator works). A card an
operator may not see is "no such client" (404), as another operator's call is "no such call".
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from crm_sync.schema import clients, timeline_entries
from pbx_bridge.db.schema import call_legs, calls
from pbx_bridge.http.auth import Principal
from pbx_bridge.http.errors import ApiError


def operator_extension(who: Principal) -> str | None:
    """The extension an operator is limited to; None for the roles that see every card."""
    if who.role != "operator":
        return None
    return who.extension or "-"  # an operator without an extension matches nothing


def calls_of(extension: str) -> Any:
    """Ids of the calls the extension took part in (the calls API's rule: answered it, or one of
    its legs was that phone: rung, or the click-to-call that rang it first)."""
    # A union of two plain lookups rather than OR-EXISTS per call: ix_calls_operator serves the
    # first; the legs are read once.
    answered = sa.select(calls.c.id).where(calls.c.operator == extension)
    rung = sa.select(call_legs.c.call_id).where(call_legs.c.extension == extension)
    return sa.union(answered, rung)


def visible_cards(extension: str) -> Any:
    """A WHERE condition on `clients`: the cards the operator may read and edit."""
    touched = sa.select(calls.c.client_id).where(calls.c.client_id.is_not(None),
                                                  calls.c.id.in_(calls_of(extension)))
    return sa.or_(clients.c.responsible == extension, clients.c.responsible.is_(None),
                  clients.c.id.in_(touched))


def visible_entries(extension: str) -> Any:
    """A WHERE condition on `timeline_entries`: entries of no call, or of the operator's calls."""
    return sa.or_(timeline_entries.c.call_id.is_(None),
                  timeline_entries.c.call_id.in_(calls_of(extension)))


async def check_card(conn: AsyncConnection, who: Principal, client_id: int) -> None:
    """404 unless the card exists and the principal may see it."""
    ext = operator_extension(who)
    query = sa.select(clients.c.id).where(clients.c.id == client_id)
    if ext is not None:
        query = query.where(visible_cards(ext))
    if (await conn.execute(query)).first() is None:
        raise ApiError(404, "not_found", "no such client")


async def check_responsible(conn: AsyncConnection, who: Principal, client_id: int | None,
                            wanted: str | None) -> None:
    """403 when an operator would change who is responsible for a card. On a new card
    (client_id None) an operator may name only themselves; on a card, only keep what is there
    (the web UI sends the field back unchanged)."""
    ext = operator_extension(who)
    if ext is None or wanted is None:
        return
    wanted = wanted.strip() or None
    if client_id is None:
        current = None
        allowed = {None, who.extension}
    else:
        current = (await conn.execute(sa.select(clients.c.responsible)
                                      .where(clients.c.id == client_id))).scalar_one_or_none()
        allowed = {current}
    if wanted not in allowed:
        raise ApiError(403, "forbidden_responsible",
                       "an operator may not change who is responsible for a card (crm, manager and "
                       "admin may)")
