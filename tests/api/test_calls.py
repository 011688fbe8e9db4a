"""GET /api/v1/calls and /api/v1/calls/{id} on real databases."""

from __future__ import annotations

from typing import Any

from pbx_bridge.calls.enrich import add_enricher
from pbx_bridge.calls.record import CallRecord
from tests.api.conftest import Api
from tests.api.seed import insert_call


async def _get(api: Api, path: str, role: str = "crm", **params: Any) -> tuple[int, Any]:
    resp = await api.client.get(path, params=params, headers=api.auth(role))
    return resp.status, await resp.json()


async def _seed(api: Api) -> dict[str, int]:
    async with api.runtime.engine.begin() as conn:
        ids = {
            "in_answered": await insert_call(conn, minutes=0, client_id=5),
            "in_missed": await insert_call(conn, minutes=10, status="no_answer",
                                           customer_number="+79035550199",
                                           operators_rung=["102"], did="+74951112222",
                                           legs=[{"extension": "102"}]),
            "out": await insert_call(conn, minutes=20, direction="outbound", did=None, operator="102",
                                     operators_rung=[], dialled="89035550199",
                                     customer_number="+79035550199", legs=[{"extension": "102"}]),
            "live": await insert_call(conn, minutes=30, status=None, operator=None),
            "internal": await insert_call(conn, minutes=40, direction="internal", customer_number=None,
                                          did=None, operator="102", operators_rung=["102"],
                                          legs=[{"extension": "101"}, {"extension": "102"}]),
        }
    return ids


async def test_filters(api: Api) -> None:
    ids = await _seed(api)

    async def found(**params: Any) -> set[int]:
        status, body = await _get(api, "/api/v1/calls", **params)
        assert status == 200, body
        return {c["id"] for c in body["items"]}

    assert await found() == set(ids.values())
    assert await found(direction="outbound") == {ids["out"]}
    assert await found(missed="true") == {ids["in_missed"]}
    assert await found(missed="false") == set(ids.values()) - {ids["in_missed"]}
    assert await found(status="live") == {ids["live"]}
    assert await found(status="no_answer") == {ids["in_missed"]}
    # Any human format of the number finds the E.164.
    assert await found(number="8 (903) 555-01-99") == {ids["in_missed"], ids["out"]}
    assert await found(number="+7 903 5550199") == {ids["in_missed"], ids["out"]}
    assert await found(did="7 (495) 111-22-22") == {ids["in_missed"]}
    assert await found(client_id="5") == {ids["in_answered"]}
    assert await found(operator="102") == {ids["in_missed"], ids["out"], ids["internal"]}
    assert await found(**{"from": "2026-11-20T09:10:00Z", "to": "2026-11-20T09:30:00Z"}) == {
        ids["in_missed"], ids["out"]}
    assert await found(**{"from": "2026-11-20T12:10:00+03:00"}) == {ids["in_missed"], ids["out"], ids["live"],
                                                                    ids["internal"]}


async def test_bad_parameters_are_422(api: Api) -> None:
    for params in ({"number": "abc"}, {"did": "12"}, {"from": "yesterday"}, {"direction": "sideways"},
                   {"status": "great"}, {"missed": "maybe"}, {"operator": "1o1"}, {"limit": "0"},
                   {"limit": "100000"}, {"cursor": "garbage"}, {"client_id": "-1"}, {"cursor": "WzEsMl0"}):
        status, body = await _get(api, "/api/v1/calls", **params)
        assert status == 422, (params, body)
        # A number with too few digits has its own code: the UI says it in the reader's language.
        code = "number_too_short" if "number" in params else "invalid_parameter"
        assert body["error"]["code"] == code and body["error"]["message"]


async def test_cursor_pages_cover_everything_once(api: Api) -> None:
    async with api.runtime.engine.begin() as conn:
        # Several calls in the same second: the id breaks the tie.
        made = [await insert_call(conn, minutes=i // 3) for i in range(23)]
    seen: list[int] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": "5", **({"cursor": cursor} if cursor else {})}
        status, body = await _get(api, "/api/v1/calls", "manager", **params)
        assert status == 200
        seen += [c["id"] for c in body["items"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
        # A call arriving meanwhile (newer) does not shift the pages.
        if pages == 2:
            async with api.runtime.engine.begin() as conn:
                await insert_call(conn, minutes=500)
    assert pages == 5 and sorted(seen) == sorted(made) and len(seen) == len(set(seen))
    assert seen == sorted(seen, key=lambda i: (made.index(i) // 3, i), reverse=True)


async def test_operator_sees_only_own_calls(api: Api) -> None:
    ids = await _seed(api)
    status, body = await _get(api, "/api/v1/calls", "operator")  # extension 101
    assert status == 200
    assert {c["id"] for c in body["items"]} == {ids["in_answered"], ids["internal"]}
    status, body = await _get(api, "/api/v1/calls", "operator102")
    assert {c["id"] for c in body["items"]} == {ids["in_missed"], ids["out"], ids["internal"]}
    assert (await _get(api, f"/api/v1/calls/{ids['out']}", "operator"))[0] == 404
    assert (await _get(api, f"/api/v1/calls/{ids['out']}", "operator102"))[0] == 200


async def test_detail_with_legs_and_enrichers(api: Api) -> None:
    ids = await _seed(api)

    async def recording(_conn: Any, record: CallRecord, detail: dict[str, Any]) -> dict[str, Any]:
        return {"recording": {"url": f"/recordings/{record.id}.wav"}}

    async def broken(_conn: Any, _record: CallRecord, _detail: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("a feature failed")

    add_enricher(api.runtime.services, broken)
    add_enricher(api.runtime.services, recording)
    status, body = await _get(api, f"/api/v1/calls/{ids['internal']}")
    assert status == 200
    assert [leg["extension"] for leg in body["legs"]] == ["101", "102"]
    assert body["recording"] == {"url": f"/recordings/{ids['internal']}.wav"}
    assert body["client"] is None and body["transcript"] is None
    assert body["direction"] == "internal" and body["status"] == "answered"
    assert body["wait_seconds"] == 5.0 and body["talk_seconds"] == 60.0
    assert body["started_at"] == "2026-11-20T09:40:00.000Z"
    for missing in ("999999", "abc", "0", "99999999999999999999"):
        status, body = await _get(api, f"/api/v1/calls/{missing}")
        assert status == 404 and body["error"]["code"] == "not_found"
