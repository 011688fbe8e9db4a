"""Merging two cards of one client: everything of the card merged away moves to the card kept.

Phones, e-mails and tags are added (no duplicates), empty fields filled, notes joined; its
timeline (calls, tasks, notes, recordings, transcripts) and tasks move over, so both histories
show on the kept card; number claims follow. The merged card is then deleted. The application
re-points its own rows (calls.client_id) in the same transaction.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from crm_sync import phones
from crm_sync.cards import CardError, CardNotFound
from crm_sync.schema import Db, client_emails, client_phones, clients, phone_claims, tasks, timeline_entries


async def merge_cards(db: Db, keep_id: int, drop_id: int, now: datetime) -> None:
    if keep_id == drop_id:
        raise CardError("merge", "a card cannot be merged with itself")
    rows = {r.id: r for r in await db.execute(sa.select(clients).where(clients.c.id.in_([keep_id, drop_id])))}
    for client_id in (keep_id, drop_id):
        if client_id not in rows:
            raise CardNotFound(f"no client card {client_id}")
    keep, drop = rows[keep_id], rows[drop_id]
    await _move_phones(db, keep_id, drop_id)
    kept_mail = set((await db.execute(sa.select(client_emails.c.email)
                                      .where(client_emails.c.client_id == keep_id))).scalars())
    await db.execute(sa.delete(client_emails).where(client_emails.c.client_id == drop_id,
                                                    client_emails.c.email.in_(kept_mail)))
    await db.execute(sa.update(client_emails).where(client_emails.c.client_id == drop_id)
                     .values(client_id=keep_id))
    await _move_timeline(db, keep_id, drop_id)
    await db.execute(sa.update(tasks).where(tasks.c.client_id == drop_id).values(client_id=keep_id))
    await db.execute(sa.update(phone_claims).where(phone_claims.c.client_id == drop_id)
                     .values(client_id=keep_id))
    tags = list(keep.tags or []) + [t for t in (drop.tags or []) if t not in (keep.tags or [])]
    notes = "\n\n".join(n for n in (keep.notes, drop.notes) if n) or None
    await db.execute(sa.update(clients).where(clients.c.id == keep_id).values(
        company=keep.company or drop.company, responsible=keep.responsible or drop.responsible,
        source=keep.source or drop.source, tags=tags, notes=notes, updated_at=now,
        auto_created=bool(keep.auto_created and drop.auto_created),
        last_activity_at=max(keep.last_activity_at, drop.last_activity_at),
        created_at=min(keep.created_at, drop.created_at)))
    await db.execute(sa.insert(timeline_entries).values(
        client_id=keep_id, kind="merge", call_id=None, at=now,
        payload={"merged_id": drop_id, "merged_name": drop.name}))
    await db.execute(sa.delete(clients).where(clients.c.id == drop_id))


async def _move_phones(db: Db, keep_id: int, drop_id: int) -> None:
    kept = {r.e164 or "raw:" + phones.digits(r.raw) for r in await db.execute(
        sa.select(client_phones.c.e164, client_phones.c.raw).where(client_phones.c.client_id == keep_id))}
    for row in (await db.execute(sa.select(client_phones).where(client_phones.c.client_id == drop_id))).all():
        key = row.e164 or "raw:" + phones.digits(row.raw)
        if key in kept:
            await db.execute(sa.delete(client_phones).where(client_phones.c.id == row.id))
        else:
            kept.add(key)
            await db.execute(sa.update(client_phones).where(client_phones.c.id == row.id)
                             .values(client_id=keep_id))


async def _move_timeline(db: Db, keep_id: int, drop_id: int) -> None:
    """A call on both cards keeps the kept card's entry (one per card, kind and call)."""
    both = sa.select(timeline_entries.c.kind, timeline_entries.c.call_id).where(
        timeline_entries.c.client_id == keep_id, timeline_entries.c.call_id.is_not(None))
    seen = {(r.kind, r.call_id) for r in await db.execute(both)}
    for row in (await db.execute(sa.select(timeline_entries.c.id, timeline_entries.c.kind,
                                           timeline_entries.c.call_id)
                                 .where(timeline_entries.c.client_id == drop_id))).all():
        if row.call_id is not None and (row.kind, row.call_id) in seen:
            await db.execute(sa.delete(timeline_entries).where(timeline_entries.c.id == row.id))
        else:
            await db.execute(sa.update(timeline_entries).where(timeline_entries.c.id == row.id)
                             .values(client_id=keep_id))
