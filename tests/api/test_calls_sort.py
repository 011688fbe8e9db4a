"""GET /api/v1/calls?sort=: the whole journal in another order, page after page (issue 17: the
UI sorted only the page it had loaded)."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from pbx_bridge.calls.query import SORT_FIELDS, Sort, decode_cursor
from pbx_bridge.db.schema import calls
from tests.api.conftest import Api
from tests.api.seed import T0, insert_call


async def _seed(api: Api) -> list[dict[str, Any]]:
    """Calls with ties and without values (live: no wait nor talk time), started in an order
    unrelated to their times."""
    rows = []
    async with api.runtime.engine.begin() as conn:
        for i in range(23):
            status = None if i % 7 == 3 else ("answered" if i % 3 else "no_answer")
            talk = float((i * 5) % 4 * 30)  # 0, 30, 60, 90: many ties
            wait = float((i * 11) % 9)
            call_id = await insert_call(conn, minutes=(i * 17) % 23, status=status, talk=talk, wait=wait)
            row = (await conn.execute(sa.select(calls).where(calls.c.id == call_id))).one()
            rows.append({"id": call_id, "started_at": row.started_at, "wait_seconds": row.wait_seconds,
                         "talk_seconds": row.talk_seconds})
    return rows


def _expected(rows: list[dict[str, Any]], sort: Sort) -> list[int]:
    # Calls without the value are the smallest; ties go by id, in the same direction.
    def key(r: dict[str, Any]) -> tuple[Any, ...]:
        value = r[sort.field]
        return (value is not None, value if value is not None else 0, r["id"])
    return [r["id"] for r in sorted(rows, key=key, reverse=sort.descending)]


async def _pages(api: Api, sort: str, limit: int = 4) -> list[int]:
    seen: list[int] = []
    cursor = None
    for _ in range(50):
        params = {"limit": str(limit), "sort": sort, **({"cursor": cursor} if cursor else {})}
        resp = await api.client.get("/api/v1/calls", params=params, headers=api.auth("manager"))
        body = await resp.json()
        assert resp.status == 200, body
        seen += [c["id"] for c in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            return seen
    raise AssertionError("the pages never ended")


@pytest.mark.parametrize("sort", [f"{d}{f}" for f in SORT_FIELDS for d in ("-", "")])
async def test_every_page_follows_the_sort(api: Api, sort: str) -> None:
    rows = await _seed(api)
    assert await _pages(api, sort) == _expected(rows, Sort.parse(sort))


async def test_default_is_newest_first_and_its_cursor_keeps_its_shape(api: Api) -> None:
    rows = await _seed(api)
    assert await _pages(api, "-started_at") == _expected(rows, Sort())
    resp = await api.client.get("/api/v1/calls", params={"limit": "3"}, headers=api.auth("manager"))
    body = await resp.json()
    when, _ = decode_cursor(body["next_cursor"])  # a cursor given out before `sort` existed
    assert when >= T0


@pytest.mark.parametrize("params", [
    {"sort": "customer_number"}, {"sort": "-"}, {"sort": "--talk_seconds"}, {"sort": "id; DROP TABLE calls"},
    {"sort": "+talk_seconds"}, {"sort": "TALK_SECONDS"},
])
async def test_a_sort_not_offered_is_a_422(api: Api, params: dict[str, str]) -> None:
    resp = await api.client.get("/api/v1/calls", params=params, headers=api.auth("manager"))
    body = await resp.json()
    assert resp.status == 422, body
    assert body["error"]["code"] == "invalid_parameter" and "'sort'" in body["error"]["message"]


async def test_a_cursor_continues_only_its_own_sort(api: Api) -> None:
    await _seed(api)

    async def first_cursor(sort: str) -> str:
        resp = await api.client.get("/api/v1/calls", params={"limit": "2", "sort": sort},
                                    headers=api.auth("manager"))
        return str((await resp.json())["next_cursor"])

    talk = await first_cursor("-talk_seconds")
    for other in ("talk_seconds", "-wait_seconds", "-started_at"):
        resp = await api.client.get("/api/v1/calls", params={"sort": other, "cursor": talk},
                                    headers=api.auth("manager"))
        assert resp.status == 422, other
    newest = await first_cursor("-started_at")
    resp = await api.client.get("/api/v1/calls", params={"sort": "-talk_seconds", "cursor": newest},
                                headers=api.auth("manager"))
    assert resp.status == 422


@pytest.mark.parametrize("sort", [f"{d}{f}" for f in ("wait_seconds", "talk_seconds") for d in ("-", "")])
async def test_a_sorted_page_is_read_from_an_index(api: Api, sort: str) -> None:
    """Index-friendly: the page is an index range in the sort's order, never a sort of every
    matching call (SQLite's plan has no temporary B-tree, PostgreSQL's no Sort node)."""
    order = Sort.parse(sort)
    query = sa.select(calls).where(order.after(30.0, 5)).order_by(*order.order_by()).limit(51)
    async with api.runtime.engine.connect() as conn:
        compiled = query.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True})
        if conn.dialect.name == "sqlite":
            rows = await conn.execute(sa.text(f"EXPLAIN QUERY PLAN {compiled}"))
            plan = " | ".join(str(r[-1]) for r in rows)
            assert f"INDEX ix_calls_{order.field}_id" in plan and "TEMP B-TREE" not in plan, plan
        else:
            # A few rows: PostgreSQL would rather read them all and sort. Told to avoid that, it
            # must find an index whose order is the page's (without one it sorts anyway).
            for setting in ("enable_seqscan", "enable_bitmapscan", "enable_sort"):
                await conn.execute(sa.text(f"SET LOCAL {setting} = off"))
            plan = " | ".join(r[0] for r in await conn.execute(sa.text(f"EXPLAIN {compiled}")))
            assert f"ix_calls_{order.field}_id" in plan and "Sort" not in plan, plan
