"""A card's timeline: calls, tasks, notes, and links to recordings and transcripts added later."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, TypedDict

import sqlalchemy as sa

from crm_sync.cards import card_exists, iso, touch_activity
from crm_sync.contacts import CallFacts
from crm_sync.schema import Db, timeline_entries

EntryKind = Literal["call", "task", "note", "recording", "transcript"]
LinkKind = Literal["recording", "transcript"]


class TimelineEntry(TypedDict):
    id: int
    kind: str
    call_id: int | None
    payload: dict[str, Any]
    at: str


class TimelineError(ValueError):
    pass


def call_payload(facts: CallFacts) -> dict[str, Any]:
    return {
        "direction": facts.direction,
        "status": facts.status,
        "missed": facts.missed,
        "operator": facts.operator,
        "customer_number": facts.customer_number,
        "did": facts.did,
        "wait_seconds": facts.wait_seconds,
        "talk_seconds": facts.talk_seconds,
        "started_at": iso(facts.started_at),
        "answered_at": iso(facts.answered_at) if facts.answered_at else None,
        "ended_at": iso(facts.ended_at) if facts.ended_at else None,
        "pbx": facts.pbx,
        "linkedid": facts.linkedid,
    }


async def _upsert(
    db: Db,
    client_id: int,
    kind: EntryKind,
    call_id: int | None,
    payload: dict[str, Any],
    at: datetime,
    *,
    keep: tuple[str, ...] = (),
) -> int:
    """Insert, or replace the payload of the entry for this (card, kind, call)."""
    if call_id is not None:
        found = (
            await db.execute(
                sa.select(timeline_entries.c.id, timeline_entries.c.payload).where(
                    timeline_entries.c.client_id == client_id,
                    timeline_entries.c.kind == kind,
                    timeline_entries.c.call_id == call_id,
                )
            )
        ).first()
        if found is not None:
            merged = dict(payload)
            for key in keep:  # fields other features added (links) survive a re-attach
                if key in (found.payload or {}):
                    merged[key] = found.payload[key]
            await db.execute(
                sa.update(timeline_entries).where(timeline_entries.c.id == found.id).values(payload=merged)
            )
            return int(found.id)
    result = await db.execute(
        sa.insert(timeline_entries)
        .values(client_id=client_id, kind=kind, call_id=call_id, payload=payload, at=at)
        .returning(timeline_entries.c.id)
    )
    return int(result.scalar_one())


async def attach_call(db: Db, client_id: int, facts: CallFacts) -> int:
    """The ended call on the card's timeline (once per call) and the card marked active."""
    payload = call_payload(facts)
    payload["links"] = {}
    entry_id = await _upsert(db, client_id, "call", facts.call_id, payload, facts.started_at, keep=("links",))
    await touch_activity(db, client_id, facts.ended_at or facts.started_at)
    return entry_id


async def add_timeline_link(
    db: Db, call_id: int, kind: LinkKind, payload: dict[str, Any], at: datetime
) -> list[int]:
    """A recording or transcript of a call, on every card the call is attached to.

    Adds a `recording` / `transcript` entry and records the link in the call entry's
    `links` (so a card's call shows its recording). Returns the new entries' ids ([] when the
    call is on no card).
    """
    if kind not in ("recording", "transcript"):
        raise TimelineError(f"unknown link kind {kind!r}")
    calls = (
        await db.execute(
            sa.select(timeline_entries.c.id, timeline_entries.c.client_id, timeline_entries.c.payload).where(
                timeline_entries.c.call_id == call_id, timeline_entries.c.kind == "call"
            )
        )
    ).all()
    out = []
    for row in calls:
        merged = dict(row.payload or {})
        links = dict(merged.get("links") or {})
        links[kind] = payload
        merged["links"] = links
        await db.execute(
            sa.update(timeline_entries).where(timeline_entries.c.id == row.id).values(payload=merged)
        )
        out.append(await _upsert(db, row.client_id, kind, call_id, dict(payload), at))
    return out


async def add_note(db: Db, client_id: int, text: str, at: datetime, author: str | None = None) -> int:
    body = (text or "").strip()
    if not body:
        raise TimelineError("the note is empty")
    if not await card_exists(db, client_id):
        raise TimelineError(f"no client card {client_id}")
    return await _upsert(db, client_id, "note", None, {"text": body, "author": author}, at)


async def add_task_entry(
    db: Db, client_id: int, task_id: int, call_id: int | None, payload: dict[str, Any], at: datetime
) -> int:
    return await _upsert(db, client_id, "task", call_id, {"task_id": task_id, **payload}, at)


async def update_task_entry(db: Db, task_id: int, changes: dict[str, Any]) -> None:
    rows = (
        await db.execute(
            sa.select(timeline_entries.c.id, timeline_entries.c.payload)
            .where(timeline_entries.c.kind == "task")
            .where(timeline_entries.c.payload["task_id"].as_integer() == task_id)
        )
    ).all()
    for row in rows:
        await db.execute(
            sa.update(timeline_entries)
            .where(timeline_entries.c.id == row.id)
            .values(payload={**(row.payload or {}), **changes})
        )


async def list_timeline(
    db: Db, client_id: int, *, limit: int = 100, before_id: int | None = None, visible: Any = None
) -> list[TimelineEntry]:
    """Newest entry first (by id, so paging is exact); page with `before_id` = the last id seen.
    `visible`: the caller's access rule, a condition on `timeline_entries` (or None)."""
    query = sa.select(timeline_entries).where(timeline_entries.c.client_id == client_id)
    if visible is not None:
        query = query.where(visible)
    if before_id is not None:
        query = query.where(timeline_entries.c.id < before_id)
    rows = await db.execute(query.order_by(timeline_entries.c.id.desc()).limit(limit))
    return [
        TimelineEntry(id=r.id, kind=r.kind, call_id=r.call_id, payload=dict(r.payload or {}), at=iso(r.at))
        for r in rows
    ]
