"""Call-back tasks: a missed inbound call opens one; a later answered call with the client closes it.

One open call-back per client (or per number when the policy made no card): further missed calls
while it is open are on the timeline, not extra tasks.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, TypedDict

import sqlalchemy as sa

from crm_sync.cards import iso
from crm_sync.schema import Db, tasks
from crm_sync.timeline import add_task_entry, update_task_entry

TaskStatus = Literal["open", "closed"]
CALL_BACK = "call_back"


class Task(TypedDict):
    id: int
    client_id: int | None
    number: str | None
    kind: str
    assignee: str | None
    status: str
    due_at: str | None
    created_at: str
    closed_at: str | None
    created_by_call_id: int | None
    closed_by_call_id: int | None


class TaskNotFound(LookupError):
    pass


def call_back_assignee(responsible: str | None, group: str | None) -> str | None:
    """The card's responsible operator, else the configured group, else nobody in particular."""
    return responsible or group or None


def _owner(client_id: int | None, number: str | None) -> Any:
    if client_id is not None and number:
        return sa.or_(tasks.c.client_id == client_id, tasks.c.number == number)
    if client_id is not None:
        return tasks.c.client_id == client_id
    return tasks.c.number == number


async def create_call_back(
    db: Db,
    *,
    client_id: int | None,
    number: str | None,
    assignee: str | None,
    call_id: int | None,
    now: datetime,
    due_at: datetime | None = None,
) -> int | None:
    """Open a call-back task for a missed call; None when one is already open (or was made for
    this very call). Needs a card or a number."""
    if client_id is None and not number:
        return None
    if call_id is not None:
        done = await db.execute(
            sa.select(tasks.c.id).where(tasks.c.kind == CALL_BACK, tasks.c.created_by_call_id == call_id)
        )
        if done.first() is not None:
            return None
    already = await db.execute(
        sa.select(tasks.c.id).where(
            tasks.c.kind == CALL_BACK, tasks.c.status == "open", _owner(client_id, number)
        )
    )
    if already.first() is not None:
        return None
    result = await db.execute(
        sa.insert(tasks)
        .values(
            client_id=client_id,
            number=number,
            kind=CALL_BACK,
            assignee=assignee,
            status="open",
            due_at=due_at,
            created_at=now,
            created_by_call_id=call_id,
        )
        .returning(tasks.c.id)
    )
    task_id = int(result.scalar_one())
    if client_id is not None:
        await add_task_entry(
            db, client_id, task_id, call_id, {"task": CALL_BACK, "status": "open", "assignee": assignee}, now
        )
    return task_id


async def close_call_backs(
    db: Db, *, client_id: int | None, number: str | None, call_id: int | None, now: datetime
) -> list[int]:
    """Close the open call-backs of this client / number (a call with them was answered)."""
    if client_id is None and not number:
        return []
    ids = [
        int(i)
        for i in (
            await db.execute(
                sa.select(tasks.c.id).where(
                    tasks.c.kind == CALL_BACK, tasks.c.status == "open", _owner(client_id, number)
                )
            )
        ).scalars()
    ]
    for task_id in ids:
        await _close(db, task_id, now, call_id)
    return ids


async def _close(db: Db, task_id: int, now: datetime, call_id: int | None) -> None:
    await db.execute(
        sa.update(tasks)
        .where(tasks.c.id == task_id)
        .values(status="closed", closed_at=now, closed_by_call_id=call_id)
    )
    await update_task_entry(
        db, task_id, {"status": "closed", "closed_by_call_id": call_id, "closed_at": iso(now)}
    )


async def close_task(db: Db, task_id: int, now: datetime, *, call_id: int | None = None) -> Task:
    """Close a task by hand (closing a closed task is harmless)."""
    task = await get_task(db, task_id)
    if task is None:
        raise TaskNotFound(f"no task {task_id}")
    if task["status"] == "open":
        await _close(db, task_id, now, call_id)
    closed = await get_task(db, task_id)
    assert closed is not None
    return closed


async def get_task(db: Db, task_id: int) -> Task | None:
    row = (await db.execute(sa.select(tasks).where(tasks.c.id == task_id))).first()
    return None if row is None else _task(row)


async def list_tasks(
    db: Db,
    *,
    client_id: int | None = None,
    assignee: str | None = None,
    status: TaskStatus | None = None,
    limit: int = 100,
) -> list[Task]:
    query = sa.select(tasks)
    if client_id is not None:
        query = query.where(tasks.c.client_id == client_id)
    if assignee is not None:
        query = query.where(tasks.c.assignee == assignee)
    if status is not None:
        query = query.where(tasks.c.status == status)
    rows = await db.execute(query.order_by(tasks.c.id.desc()).limit(limit))
    return [_task(r) for r in rows]


def _task(r: Any) -> Task:
    return Task(
        id=r.id,
        client_id=r.client_id,
        number=r.number,
        kind=r.kind,
        assignee=r.assignee,
        status=r.status,
        due_at=iso(r.due_at) if r.due_at else None,
        created_at=iso(r.created_at),
        closed_at=iso(r.closed_at) if r.closed_at else None,
        created_by_call_id=r.created_by_call_id,
        closed_by_call_id=r.closed_by_call_id,
    )
