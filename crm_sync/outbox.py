"""A durable outbox for everything sent to an external CRM.

Items are written in the same transaction as the change they describe, so a committed change is
never lost and a rolled-back one is never sent. The delivery loop sends at least once (a crash
between sending and marking repeats the send; the Idempotency-Key header lets the CRM drop the
repeat), in order per `client_key` (only the oldest undelivered item of a key is ever in flight),
retrying with exponential backoff. After `max_attempts`, or at once for an answer that retrying
cannot fix (4xx), an item becomes a dead letter: it is taken out of its key's line (so one
poisoned item does not hold the client's later items back forever), listed by `outbox dead` and
re-queued by `outbox retry ID`.

When nothing gets through at all (the CRM is down, or answers only 5xx / 429), the CRM as a whole
is backed off (`CrmCircuit`): no item is tried until the pause is over, then one item probes.
Without it, a backlog of N clients costs N connection attempts every few seconds for as long as
the outage lasts. An item that could not even be sent (no connection) is not at fault: such tries
never turn it into a dead letter, however long the outage.

A sender may also answer `NotYet` (what the item needs is not there yet: a recording still being
converted): the item waits that long without it counting as a try or as a CRM failure. A sender
that can put many items in one request (Bitrix24's `batch`) is given the whole round at once
(`send_many`) and answers per item.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from crm_sync.cards import iso
from crm_sync.schema import Db, outbox

log = logging.getLogger("crm_sync.outbox")
State = Literal["pending", "dead", "delivered", "all"]


class DeliveryError(Exception):
    """Sending failed; `retryable` False when trying again cannot help (the CRM refused it);
    `unreachable` when the request never reached the CRM (no connection)."""

    def __init__(self, message: str, *, retryable: bool = True, unreachable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.unreachable = unreachable


class NotYet(Exception):
    """The item cannot be sent yet (it waits for something of ours, not for the CRM): try again
    in `seconds`, without counting a try."""

    def __init__(self, reason: str, seconds: float) -> None:
        super().__init__(reason)
        self.seconds = seconds


class OutboxItemNotFound(LookupError):
    pass


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 10
    base_seconds: float = 2.0
    max_seconds: float = 600.0

    def delay(self, attempts: int) -> float:
        """Seconds before the next try after `attempts` failures: base, 2*base, 4*base ... capped."""
        return float(min(self.max_seconds, self.base_seconds * 2 ** max(0, attempts - 1)))


# The longest pause between probes of a CRM that is down: once it is back, delivery resumes within
# this long, whatever the per-item backoff has grown to.
CIRCUIT_MAX_SECONDS = 60.0


@dataclass
class CrmCircuit:
    """The external CRM as a whole. A round in which nothing was delivered and something failed
    for a reason that retrying can fix opens the circuit for policy.delay(rounds) seconds
    (at most CIRCUIT_MAX_SECONDS); while it is open a round tries one item; a delivery closes it."""

    policy: RetryPolicy
    failed_rounds: int = 0
    open_until: datetime | None = None

    @property
    def is_open(self) -> bool:
        return self.failed_rounds > 0

    def reset(self) -> None:
        self.failed_rounds, self.open_until = 0, None

    def wait_seconds(self, now: datetime) -> float:
        if self.open_until is None:
            return 0.0
        return max(0.0, (self.open_until - now).total_seconds())

    def record(self, delivered: int, retryable_failures: int, now: datetime) -> None:
        if delivered:
            self.failed_rounds, self.open_until = 0, None
        elif retryable_failures:
            self.failed_rounds += 1
            pause = min(CIRCUIT_MAX_SECONDS, self.policy.delay(self.failed_rounds))
            self.open_until = now + timedelta(seconds=pause)


@dataclass(frozen=True)
class OutboxItem:
    id: int
    client_key: str
    kind: str
    payload: dict[str, Any]
    attempts: int
    created_at: datetime
    next_attempt_at: datetime
    delivered_at: datetime | None
    dead: bool
    last_error: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "client_key": self.client_key,
            "kind": self.kind,
            "payload": self.payload,
            "attempts": self.attempts,
            "created_at": iso(self.created_at),
            "next_attempt_at": iso(self.next_attempt_at),
            "delivered_at": iso(self.delivered_at) if self.delivered_at else None,
            "dead": self.dead,
            "last_error": self.last_error,
        }


Send = Callable[[OutboxItem], Awaitable[None]]
# Many items at once: one outcome per item, in the same order (None = delivered, else the
# DeliveryError / NotYet / other exception for that item).
SendMany = Callable[[list[OutboxItem]], Awaitable[list[BaseException | None]]]


def _item(row: Any) -> OutboxItem:
    return OutboxItem(
        id=row.id,
        client_key=row.client_key,
        kind=row.kind,
        payload=dict(row.payload or {}),
        attempts=row.attempts,
        created_at=row.created_at,
        next_attempt_at=row.next_attempt_at,
        delivered_at=row.delivered_at,
        dead=bool(row.dead),
        last_error=row.last_error,
    )


async def enqueue(db: Db, client_key: str, kind: str, payload: dict[str, Any], now: datetime) -> int:
    """Add an item inside the caller's transaction (the one that makes the change)."""
    result = await db.execute(
        sa.insert(outbox)
        .values(
            client_key=client_key,
            kind=kind,
            payload=payload,
            attempts=0,
            created_at=now,
            next_attempt_at=now,
            dead=False,
        )
        .returning(outbox.c.id)
    )
    return int(result.scalar_one())


def _pending() -> Any:
    return sa.and_(outbox.c.delivered_at.is_(None), outbox.c.dead.is_(sa.false()))


async def due_items(db: Db, now: datetime, limit: int = 50) -> list[OutboxItem]:
    """The oldest pending item of each client key, if its next attempt is due."""
    # One pass over the pending items (grouped by client), not a correlated subquery per row:
    # with stale planner statistics PostgreSQL ran that one as a scan of every pending item per
    # pending item (20,000 pending: 4 s per round, 37,000: 44 s; found by bench_soak).
    heads = (
        sa.select(sa.func.min(outbox.c.id).label("id"))
        .where(_pending())
        .group_by(outbox.c.client_key)
        .subquery("heads")
    )
    rows = await db.execute(
        sa.select(outbox)
        .join(heads, heads.c.id == outbox.c.id)
        .where(outbox.c.next_attempt_at <= now)
        .order_by(outbox.c.id)
        .limit(limit)
    )
    return [_item(r) for r in rows]


async def mark_delivered(db: Db, item_id: int, now: datetime) -> None:
    await db.execute(
        sa.update(outbox)
        .where(outbox.c.id == item_id)
        .values(delivered_at=now, attempts=outbox.c.attempts + 1, last_error=None)
    )


async def mark_failed(
    db: Db, item: OutboxItem, error: DeliveryError, now: datetime, policy: RetryPolicy
) -> bool:
    """Count the failure and schedule the next try; True when the item became a dead letter."""
    attempts = item.attempts + 1
    # Tries that never reached the CRM say nothing about the item: they never make it dead.
    dead = not error.retryable or (attempts >= policy.max_attempts and not error.unreachable)
    await db.execute(
        sa.update(outbox)
        .where(outbox.c.id == item.id)
        .values(
            attempts=attempts,
            dead=dead,
            last_error=str(error)[:2000],
            next_attempt_at=now + timedelta(seconds=policy.delay(attempts)),
        )
    )
    return dead


async def postpone(db: Db, item: OutboxItem, now: datetime, wait: NotYet) -> None:
    """The item waits (NotYet): no try counted, the reason kept for `outbox list`."""
    await db.execute(
        sa.update(outbox)
        .where(outbox.c.id == item.id)
        .values(last_error=f"waiting: {wait}"[:2000],
                next_attempt_at=now + timedelta(seconds=max(0.0, wait.seconds)))
    )


async def nudge(db: Db, client_key: str, now: datetime) -> int:
    """Make a key's waiting item due now (what it waited for has arrived). Returns rows changed."""
    result = await db.execute(
        sa.update(outbox)
        .where(outbox.c.client_key == client_key, _pending(), outbox.c.next_attempt_at > now)
        .values(next_attempt_at=now)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def counts(db: Db) -> dict[str, int]:
    """Items waiting and dead letters (for /readyz and /metrics)."""
    row = (await db.execute(sa.select(
        sa.func.count().filter(_pending()),
        sa.func.count().filter(outbox.c.dead.is_(sa.true())),
    ))).one()
    return {"pending": int(row[0] or 0), "dead": int(row[1] or 0)}


async def list_items(db: Db, state: State = "pending", *, limit: int = 100) -> list[OutboxItem]:
    query = sa.select(outbox)
    if state == "pending":
        query = query.where(_pending())
    elif state == "dead":
        query = query.where(outbox.c.dead.is_(sa.true()))
    elif state == "delivered":
        query = query.where(outbox.c.delivered_at.is_not(None))
    rows = await db.execute(query.order_by(outbox.c.id).limit(limit))
    return [_item(r) for r in rows]


async def get_item(db: Db, item_id: int) -> OutboxItem | None:
    row = (await db.execute(sa.select(outbox).where(outbox.c.id == item_id))).first()
    return None if row is None else _item(row)


async def retry(db: Db, item_id: int, now: datetime) -> OutboxItem:
    """Put a dead (or waiting) item back in line for an immediate try, attempts from zero."""
    item = await get_item(db, item_id)
    if item is None:
        raise OutboxItemNotFound(f"no outbox item {item_id}")
    if item.delivered_at is not None:
        raise OutboxItemNotFound(f"outbox item {item_id} was already delivered")
    await db.execute(
        sa.update(outbox).where(outbox.c.id == item_id).values(dead=False, attempts=0, next_attempt_at=now)
    )
    fresh = await get_item(db, item_id)
    assert fresh is not None
    return fresh


async def purge_delivered(db: Db, before: datetime) -> int:
    """Forget items delivered before `before` (dead letters and pending items are kept)."""
    result = await db.execute(
        sa.delete(outbox).where(outbox.c.delivered_at.is_not(None), outbox.c.delivered_at < before)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def utcnow() -> datetime:
    return datetime.now(UTC)


async def deliver_due(
    engine: AsyncEngine,
    send: Send | None,
    policy: RetryPolicy,
    *,
    limit: int = 50,
    concurrency: int = 8,
    clock: Callable[[], datetime] = utcnow,
    circuit: CrmCircuit | None = None,
    send_many: SendMany | None = None,
) -> int:
    """One round: send every due head (different clients in parallel, or all in one `send_many`
    call); returns how many went. With an open `circuit`, only one item is tried (the probe)."""
    probing = circuit is not None and circuit.is_open
    async with engine.connect() as conn:
        items = await due_items(conn, clock(), 1 if probing else limit)
    if not items:
        return 0
    retryable_failures = 0
    unreachable = False

    async def settle(item: OutboxItem, outcome: BaseException | None) -> bool:
        nonlocal retryable_failures, unreachable
        if outcome is None:
            async with engine.begin() as conn:
                await mark_delivered(conn, item.id, clock())
            return True
        if isinstance(outcome, NotYet):
            async with engine.begin() as conn:
                await postpone(conn, item, clock(), outcome)
            return False
        exc = (outcome if isinstance(outcome, DeliveryError)
               else DeliveryError(f"{type(outcome).__name__}: {outcome}"))
        retryable_failures += exc.retryable
        unreachable = unreachable or exc.unreachable
        async with engine.begin() as conn:
            dead = await mark_failed(conn, item, exc, clock(), policy)
        if circuit is not None and circuit.is_open and not dead:
            return False  # the CRM is still down: said once, when the circuit opened
        log.warning(
            "outbox.failed",
            extra={
                "kv": {
                    "id": item.id,
                    "kind": item.kind,
                    "attempts": item.attempts + 1,
                    "dead": dead,
                    "error": str(exc),
                }
            },
        )
        return False

    if send_many is not None:
        try:
            outcomes = await send_many(items)
            if len(outcomes) != len(items):
                raise RuntimeError(f"send_many answered {len(outcomes)} outcomes for {len(items)} items")
        except Exception as raised:  # a bug in a sender must not stop the loop
            outcomes = [raised] * len(items)
        results = [await settle(item, outcome) for item, outcome in zip(items, outcomes, strict=True)]
    else:
        assert send is not None, "deliver_due needs send or send_many"
        gate = asyncio.Semaphore(concurrency)

        async def one(item: OutboxItem) -> bool:
            async with gate:
                if unreachable:
                    return False  # the CRM is not there: the rest of the round waits, untried
                try:
                    await send(item)
                except Exception as raised:  # a bug in a sender must not stop the loop
                    return await settle(item, raised)
                return await settle(item, None)

        results = list(await asyncio.gather(*(one(i) for i in items)))
    delivered = sum(results)
    if circuit is not None:
        was_open = circuit.is_open
        circuit.record(delivered, retryable_failures, clock())
        if circuit.is_open and not was_open:
            log.warning("outbox.crm_down", extra={"kv": {
                "pause_seconds": round(circuit.wait_seconds(clock()), 3)}})
        elif was_open and not circuit.is_open:
            log.warning("outbox.crm_back", extra={"kv": {"delivered": delivered}})
    return delivered


async def _wait_any(stop: asyncio.Event, wake: asyncio.Event | None, seconds: float) -> None:
    waiters = [asyncio.ensure_future(stop.wait())]
    if wake is not None:
        waiters.append(asyncio.ensure_future(wake.wait()))
    _done, pending = await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()


async def run_delivery_loop(
    engine: AsyncEngine,
    send: Send | None,
    policy: RetryPolicy,
    stop: asyncio.Event,
    *,
    poll_interval: float = 1.0,
    wake: asyncio.Event | None = None,
    clock: Callable[[], datetime] = utcnow,
    keep_delivered: timedelta | None = None,
    send_many: SendMany | None = None,
    limit: int = 50,
    circuit: CrmCircuit | None = None,
) -> None:
    """Deliver until `stop` is set. `wake` (set by whoever enqueues) cuts the poll wait short.
    With `keep_delivered`, delivered items older than that are deleted (checked hourly).
    `send_many` / `limit`: see deliver_due. `circuit`: the caller's, to close it early (a connector
    whose credentials were just fixed)."""
    last_purge: datetime | None = None
    circuit = circuit or CrmCircuit(policy)
    while not stop.is_set():
        pause = circuit.wait_seconds(clock())
        if pause > 0:
            # The CRM is down: nothing to try before the pause is over (new items only queue up;
            # a wake only makes the pause be looked at again: a reset circuit ends it).
            await _wait_any(stop, wake, pause)
            if wake is not None:
                wake.clear()
            continue
        if keep_delivered is not None and (last_purge is None or clock() - last_purge > timedelta(hours=1)):
            last_purge = clock()
            try:
                async with engine.begin() as conn:
                    await purge_delivered(conn, last_purge - keep_delivered)
            except (sa.exc.SQLAlchemyError, OSError):
                log.exception("outbox.purge_failed")
        try:
            sent = await deliver_due(engine, send, policy, clock=clock, circuit=circuit,
                                     send_many=send_many, limit=limit)
        except (sa.exc.SQLAlchemyError, OSError):
            log.exception("outbox.round_failed")
            sent = 0
        if sent:
            continue  # the next item of each client may be due right away
        await _wait_any(stop, wake, poll_interval)
        if wake is not None:
            wake.clear()
