"""Group commit for new click-to-call requests: every request waiting at the same moment is
written in one transaction, so under load a request waits for at most one commit instead of a
queue of them. A row that breaks a constraint (a concurrent repeat of an idempotency key) fails
alone: the group is retried row by row."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine


class GroupInserter:
    def __init__(self, engine: AsyncEngine, table: sa.Table, write_lock: asyncio.Lock,
                 max_group: int = 500) -> None:
        self._engine = engine
        self._table = table
        self._lock = write_lock
        self._max_group = max_group
        self._waiting: list[tuple[dict[str, Any], asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def insert(self, values: dict[str, Any]) -> None:
        """Return once the row is committed; raise what inserting it alone would raise."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((values, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write())
        await future

    async def _write(self) -> None:
        while self._waiting:
            group = self._waiting[: self._max_group]
            del self._waiting[: self._max_group]
            try:
                async with self._lock, self._engine.begin() as conn:
                    await conn.execute(self._table.insert(), [values for values, _ in group])
            except sa.exc.IntegrityError:
                await self._one_by_one(group)
            except Exception as exc:
                for _, future in group:
                    if not future.done():
                        future.set_exception(exc)
            else:
                for _, future in group:
                    if not future.done():
                        future.set_result(None)

    async def _one_by_one(self, group: list[tuple[dict[str, Any], asyncio.Future[None]]]) -> None:
        for values, future in group:
            try:
                async with self._lock, self._engine.begin() as conn:
                    await conn.execute(self._table.insert().values(**values))
            except Exception as exc:
                if not future.done():
                    future.set_exception(exc)
            else:
                if not future.done():
                    future.set_result(None)

    async def close(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(Exception):
                await self._writer
