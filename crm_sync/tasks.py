"""Tasks: call-backs and tasks made by hand.

A missed inbound call opens a call-back; a later answered call with the client closes it. One open
call-back per client (or per number when the policy made no card): further missed calls while it
is open are on the timeline, not extra tasks. A call-back always lands on someone: the card's
responsible operator, else every operator the call rang, else the call-back group; it is due a
configurable time after the call.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal, TypedDict

import sqlalchemy as sa

from crm_sync.cards import iso
from crm_sync.phones import ascii_digits
from crm_sync.schema import Db, clients, tasks
from crm_sync.timeline import add_task_entry, update_task_entry

TaskStatus = Literal["open", "closed"]
CALL_BACK = "call_back"
HAND_MADE = "task"
MAX_TITLE = 255


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
    title: str | None
    assignees: list[str]  # everyone who sees it as theirs (the assignee first)
    client_name: str | None
    created_by: str | None


class TaskNotFound(LookupError):
    pass


class TaskError(ValueError):
    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.reason = message


def call_back_assignees(responsible: str | None, rung: Sequence[str], group: str | None) -> list[str]:
    """Whose call-back it is: the card's responsible operator, else every operator the call
    rang, else the group (empty only when none of these exists)."""
    if responsible:
        return [responsible]
    found = [ext for i, ext in enumerate(rung) if ext and ext not in rung[:i]]
    if found:
        return found
    return [group] if group else []


def call_back_assignee(responsible: str | None, group: str | None) -> str | None:
    """The card's responsible operator, else the configured group, else nobody in particular."""
    return responsible or group or None


def _packed(names: Sequence[str]) -> str | None:
    return "," + ",".join(names) + "," if len(names) > 1 else None


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
    assignees: Sequence[str] = (),
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
            assignees=_packed(assignees),
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


_WITH_NAMES = sa.select(tasks, clients.c.name.label("client_name")).select_from(
    tasks.outerjoin(clients, clients.c.id == tasks.c.client_id))


async def get_task(db: Db, task_id: int) -> Task | None:
    row = (await db.execute(_WITH_NAMES.where(tasks.c.id == task_id))).first()
    return None if row is None else _task(row)


def seen_by(extension: str, group: str | None = None) -> Any:
    """The tasks an operator sees as theirs: assigned to them, among the operators a missed call
    rang, or (shared) the call-back group's."""
    conds = [tasks.c.assignee == extension, tasks.c.assignees.like(f"%,{extension},%")]
    if group:
        conds.append(tasks.c.assignee == group)
    return sa.or_(*conds)


def visible_to(task: Task, extension: str, group: str | None = None) -> bool:
    return extension in task["assignees"] or bool(group and task["assignee"] == group)


async def list_tasks(
    db: Db,
    *,
    client_id: int | None = None,
    assignee: str | None = None,
    status: TaskStatus | None = None,
    limit: int = 100,
    seen_by_extension: str | None = None,
    group: str | None = None,
    by_due: bool = False,
) -> list[Task]:
    """Newest first, or (by_due) the most urgent first: due soonest, undated last."""
    query = _WITH_NAMES
    if client_id is not None:
        query = query.where(tasks.c.client_id == client_id)
    if assignee is not None:
        query = query.where(sa.or_(tasks.c.assignee == assignee,
                                   tasks.c.assignees.like(f"%,{assignee},%")))
    if seen_by_extension is not None:
        query = query.where(seen_by(seen_by_extension, group))
    if status is not None:
        query = query.where(tasks.c.status == status)
    order = ([tasks.c.due_at.is_(None), tasks.c.due_at, tasks.c.id] if by_due else [tasks.c.id.desc()])
    rows = await db.execute(query.order_by(*order).limit(limit))
    return [_task(r) for r in rows]


async def create_task(
    db: Db,
    *,
    client_id: int,
    title: str,
    assignee: str | None,
    due_at: datetime | None,
    now: datetime,
    created_by: str | None = None,
) -> int:
    """A task made by hand on a card ("send the contract"), on its timeline too."""
    text = " ".join((title or "").split())
    if not text:
        raise TaskError("title", "the task has no text")
    if len(text) > MAX_TITLE:
        raise TaskError("title", f"longer than {MAX_TITLE} characters")
    if assignee is not None and not (ascii_digits(assignee) and len(assignee) <= 16):
        raise TaskError("assignee", f"{assignee!r} is not an extension (digits only)")
    found = await db.execute(sa.select(clients.c.id).where(clients.c.id == client_id))
    if found.first() is None:
        raise TaskNotFound(f"no client card {client_id}")
    result = await db.execute(sa.insert(tasks).values(
        client_id=client_id, number=None, kind=HAND_MADE, assignee=assignee, status="open",
        due_at=due_at, created_at=now, title=text, created_by=created_by).returning(tasks.c.id))
    task_id = int(result.scalar_one())
    await add_task_entry(db, client_id, task_id, None, {"task": HAND_MADE, "title": text, "status": "open",
                                                        "assignee": assignee}, now)
    return task_id


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
        title=r.title,
        assignees=[a for a in (r.assignees or "").split(",") if a] or ([r.assignee] if r.assignee else []),
        client_name=getattr(r, "client_name", None),
        created_by=r.created_by,
    )
