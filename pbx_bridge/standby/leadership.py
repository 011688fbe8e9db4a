"""Which `serve` process is the active one, when several share one PostgreSQL: a lease row in
the database (table `bridge_leader`), renewed by its holder, taken over by a standby once it has
expired by the database's own clock. No protocol of our own, and no clock but one.

- The holder renews every `renew_seconds`; the lease lasts `lease_seconds`. A standby that finds
  it expired takes it with a new `epoch`: a process that died (SIGKILL, its connection cut) is
  replaced within `lease_seconds + renew_seconds`.
- A holder only believes it is active until `lease_seconds` (less a margin) after it last *sent*
  a renewal that succeeded, by its own monotonic clock, which keeps counting while the process is
  frozen: a process stopped past its lease (SIGSTOP) and continued knows at once that it may no
  longer act, before its first renewal even fails. Everything that acts (saving calls, sending
  MixMonitor or Originate) asks `acting()` first.
- Every transaction that saves calls is fenced (`fence()`): it reads the lease row FOR SHARE
  and fails unless this process holds it with its epoch. A takeover's UPDATE waits for such a
  transaction to end, then wins; any later one of the old holder fails. Never two actives.

With SQLite there is no sharing: the process is alone and always acts (`Alone`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Literal

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from pbx_bridge.config import StandbyConfig
from pbx_bridge.db.schema import bridge_leader
from pbx_bridge.log import event

log = logging.getLogger("pbx_bridge.standby")

Role = Literal["alone", "active", "standby"]
LEASE_NAME = "bridge"
# A holder stops believing in its lease this much before the lease ends (a renewal's own
# round trip, a scheduler that woke it late).
SAFETY_MARGIN = 0.5


def default_node_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Alone:
    """SQLite: one process, always active."""

    role: Role = "alone"
    epoch = 0
    holder = ""
    changes = 0

    def acting(self) -> bool:
        return True

    async def fence(self, conn: AsyncConnection) -> bool:
        return True

    def describe(self) -> dict[str, object]:
        return {"role": self.role}


Transition = Callable[[], Awaitable[None]]


class Leadership:
    def __init__(self, engine: AsyncEngine, config: StandbyConfig, *, node: str = "",
                 url: str = "", clock: Callable[[], float] = time.monotonic) -> None:
        self.engine = engine
        self.config = config
        self.node = (node or config.node_name or default_node_name())[:128]
        self.url = url[:255]
        self.clock = clock
        self.role: Role = "standby"
        self.epoch = 0
        self.holder = ""  # who holds the lease, as last seen (a standby names the active)
        self.holder_url = ""
        self.changes = 0  # role changes (metrics, tests)
        self.last_error = ""
        self._valid_until = 0.0  # monotonic: acting() is true before this
        self._task: asyncio.Task[None] | None = None
        self._on_active: Transition | None = None
        self._on_standby: Transition | None = None

    # --- what the rest asks ---------------------------------------------------------------

    def acting(self) -> bool:
        """Active, and sure of it by its own clock right now."""
        return self.role == "active" and self.clock() < self._valid_until

    async def fence(self, conn: AsyncConnection) -> bool:
        """In a transaction that saves calls: holds the lease row (FOR SHARE); False unless
        this process is its holder with its epoch, unexpired (the transaction must not commit)."""
        if not self.acting():
            return False
        row = (await conn.execute(
            sa.select(bridge_leader.c.epoch).where(
                bridge_leader.c.name == LEASE_NAME, bridge_leader.c.holder == self.node,
                bridge_leader.c.epoch == self.epoch,
                bridge_leader.c.expires_at > sa.func.now()).with_for_update(read=True))).first()
        return row is not None

    def describe(self) -> dict[str, object]:
        return {"role": self.role, "node": self.node, "epoch": self.epoch,
                "active": None if self.role == "active" else (self.holder or None),
                "active_url": None if self.role == "active" else (self.holder_url or None)}

    # --- the loop ---------------------------------------------------------------------------

    def start(self, on_active: Transition, on_standby: Transition) -> None:
        self._on_active, self._on_standby = on_active, on_standby
        self._task = asyncio.get_running_loop().create_task(self._run(), name="leadership")

    async def stop(self) -> None:
        """Leave: an active hands its lease back at once (its standby need not wait it out)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.role == "active":
            with contextlib.suppress(OSError, sa.exc.SQLAlchemyError):
                async with self.engine.begin() as conn:
                    await conn.execute(sa.update(bridge_leader).where(
                        bridge_leader.c.name == LEASE_NAME, bridge_leader.c.holder == self.node,
                        bridge_leader.c.epoch == self.epoch).values(expires_at=sa.func.now()))
            self.role = "standby"

    async def lost(self) -> None:
        """The pipeline's fence failed: stand down now."""
        if self.role == "active":
            await self._stand_down("fenced")

    async def _run(self) -> None:
        while True:
            started = self.clock()
            try:
                if self.role == "active":
                    await self._renew()
                else:
                    await self._try_acquire()
            except asyncio.CancelledError:
                raise
            except (OSError, TimeoutError, sa.exc.SQLAlchemyError) as exc:
                self.last_error = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
                event(log, logging.WARNING, "standby.database_error", role=self.role,
                      error=self.last_error)
            if self.role == "active" and not self.acting():
                await self._stand_down("lease not renewed in time")
            delay = self.config.renew_seconds - (self.clock() - started)
            await asyncio.sleep(max(0.05, delay))

    async def acquire(self, within: float) -> bool:
        """At start: try for the lease until `within` seconds passed (a process restarted after
        a crash waits out the dead one's lease, then acts from its first event). No transition
        is run: the caller starts acting itself."""
        deadline = self.clock() + within
        while True:
            try:
                if await self._acquire_once():
                    return True
            except (OSError, TimeoutError, sa.exc.SQLAlchemyError) as exc:
                self.last_error = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
            if self.clock() >= deadline:
                return False
            await asyncio.sleep(min(self.config.renew_seconds, max(0.05, deadline - self.clock())))

    async def _try_acquire(self) -> None:
        if await self._acquire_once():
            assert self._on_active is not None
            await self._on_active()

    async def _acquire_once(self) -> bool:
        sent = self.clock()
        lease = _interval(self.config.lease_seconds)
        now = sa.func.now()
        async with asyncio.timeout(self.config.lease_seconds):
            async with self.engine.begin() as conn:
                stmt = postgresql.insert(bridge_leader).values(
                    name=LEASE_NAME, holder=self.node, epoch=1, expires_at=now + lease,
                    acquired_at=now, url=self.url)
                stmt = stmt.on_conflict_do_update(
                    index_elements=[bridge_leader.c.name],
                    set_={"holder": self.node, "epoch": bridge_leader.c.epoch + 1,
                          "expires_at": now + lease, "acquired_at": now, "url": self.url},
                    where=bridge_leader.c.expires_at < now)
                won = (await conn.execute(stmt.returning(bridge_leader.c.epoch))).first()
                if won is None:
                    current = (await conn.execute(sa.select(bridge_leader.c.holder, bridge_leader.c.url)
                                                  .where(bridge_leader.c.name == LEASE_NAME))).first()
                    if current is not None:
                        self.holder, self.holder_url = current.holder, current.url
        if won is None:
            return False
        self.epoch = int(won.epoch)
        self._valid_until = sent + self.config.lease_seconds - SAFETY_MARGIN
        self.holder, self.holder_url = self.node, self.url
        self.role = "active"
        self.changes += 1
        event(log, logging.WARNING, "standby.active", node=self.node, epoch=self.epoch)
        return True

    async def _renew(self) -> None:
        sent = self.clock()
        lease = _interval(self.config.lease_seconds)
        async with asyncio.timeout(max(0.1, self._valid_until - sent)):
            async with self.engine.begin() as conn:
                kept = (await conn.execute(
                    sa.update(bridge_leader).where(
                        bridge_leader.c.name == LEASE_NAME, bridge_leader.c.holder == self.node,
                        bridge_leader.c.epoch == self.epoch, bridge_leader.c.expires_at > sa.func.now())
                    .values(expires_at=sa.func.now() + lease, url=self.url)
                    .returning(bridge_leader.c.epoch))).first()
        if kept is None:
            await self._stand_down("the lease was taken over")
            return
        self._valid_until = sent + self.config.lease_seconds - SAFETY_MARGIN

    async def _stand_down(self, why: str) -> None:
        self.role = "standby"
        self._valid_until = 0.0
        self.changes += 1
        event(log, logging.WARNING, "standby.standing_down", node=self.node, epoch=self.epoch,
              reason=why)
        assert self._on_standby is not None
        await self._on_standby()


def _interval(seconds: float) -> sa.ColumnElement[object]:
    return sa.literal_column(f"interval '{float(seconds)} seconds'", type_=sa.Interval)
