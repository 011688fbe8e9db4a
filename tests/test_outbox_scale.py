"""The outbox after a long CRM outage (bench_soak, phase load: 18,644 items queued): picking the
next items must stay cheap. The correlated "oldest pending item of this client" subquery ran, on
PostgreSQL with planner statistics from the empty table (autovacuum off or not yet run), as a scan
of every pending item per pending item: 4 s per round at 20,000 items, 44 s at 37,000, so the
backlog took hours to deliver."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from crm_sync import outbox as ob
from crm_sync.schema import outbox

pytestmark = pytest.mark.timeout(60)


async def test_due_items_stays_fast_and_right_with_a_large_backlog(engine: AsyncEngine) -> None:
    now = datetime.now(UTC)
    clients = 9_000
    async with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            await conn.execute(sa.text("ANALYZE outbox"))  # statistics of the empty table
        await conn.execute(outbox.insert(), [
            dict(client_key=f"phone:+7{i % clients:010d}", kind="call", payload={"n": i},
                 created_at=now, next_attempt_at=now - timedelta(seconds=1))
            for i in range(20_000)])
        first_ids = list((await conn.execute(sa.select(outbox.c.id).order_by(outbox.c.id)
                                             .limit(3))).scalars())
        # The first client's head is delivered, its second item becomes its head; the second
        # client's head is not due yet, so nothing of that client may go.
        await ob.mark_delivered(conn, first_ids[0], now)
        await conn.execute(outbox.update().where(outbox.c.id == first_ids[1])
                           .values(next_attempt_at=now + timedelta(hours=1)))
    started = time.perf_counter()
    async with engine.connect() as conn:
        items = await ob.due_items(conn, now, 50)
    elapsed = time.perf_counter() - started
    assert elapsed < 1.0, f"due_items took {elapsed:.2f} s with 20,000 pending items"
    keys = [i.client_key for i in items]
    assert len(items) == 50 and len(set(keys)) == 50  # one head per client
    assert first_ids[1] not in {i.id for i in items}  # not due: its client waits
    assert [i.id for i in items] == sorted(i.id for i in items)
    assert items[0].id == first_ids[2]
    async with engine.connect() as conn:
        head_of_first = await ob.due_items(conn, now, 20_000)
    first_client = f"phone:+7{0:010d}"
    assert [i.id for i in head_of_first if i.client_key == first_client] == [first_ids[0] + clients]
