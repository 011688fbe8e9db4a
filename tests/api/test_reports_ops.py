"""Reports (numbers checked by hand against seeded calls, SQLite and PostgreSQL), /readyz, /metrics."""

from __future__ import annotations

import csv
import io

from pbx_bridge.ops.metrics import Metrics
from tests.api.conftest import Api, wait_for
from tests.api.seed import insert_call

RANGE = {"from": "2026-11-20T00:00:00Z", "to": "2026-11-23T00:00:00Z"}


async def _seed(api: Api) -> None:
    async with api.runtime.engine.begin() as conn:
        # Day 1 (2026-11-20): 3 calls: 2 answered by 101 (wait 4 and 6, talk 60 and 120), 1 missed.
        await insert_call(conn, minutes=0, wait=4, talk=60)
        await insert_call(conn, minutes=5, wait=6, talk=120)
        await insert_call(conn, minutes=9, status="no_answer", wait=20, did="+74951112222")
        # Day 2 (late evening UTC, still 2026-11-21 in UTC): 1 answered by 102, 1 busy outbound.
        await insert_call(conn, minutes=60 * 24 + 14 * 60 + 50, operator="102", wait=10, talk=30,
                          did="+74951112222")
        await insert_call(conn, minutes=60 * 24 + 60, direction="outbound", status="busy", did=None,
                          wait=3)
        # Outside the range, and a live call: not counted.
        await insert_call(conn, minutes=-60 * 24)
        await insert_call(conn, minutes=30, status=None)


async def _summary(api: Api, **params: str) -> dict[str, object]:
    resp = await api.client.get("/api/v1/reports/summary", params={**RANGE, **params},
                                headers=api.auth("manager"))
    assert resp.status == 200, await resp.text()
    body: dict[str, object] = await resp.json()
    return body


async def test_summary_by_day_operator_did_source(api: Api) -> None:
    await _seed(api)
    by_day = await _summary(api, group_by="day")
    assert by_day["rows"] == [
        {"group": "2026-11-20", "calls": 3, "answered": 2, "missed": 1, "missed_rate": 0.3333,
         "avg_wait_seconds": 10.0, "avg_talk_seconds": 90.0},
        {"group": "2026-11-21", "calls": 2, "answered": 1, "missed": 0, "missed_rate": 0.0,
         "avg_wait_seconds": 6.5, "avg_talk_seconds": 30.0},
    ]
    assert by_day["total"] == {"group": None, "calls": 5, "answered": 3, "missed": 1, "missed_rate": 0.2,
                               "avg_wait_seconds": 8.6, "avg_talk_seconds": 70.0}
    by_operator = {r["group"]: r for r in (await _summary(api, group_by="operator"))["rows"]}  # type: ignore[attr-defined]
    assert by_operator["101"]["calls"] == 2 and by_operator["102"]["avg_talk_seconds"] == 30.0
    assert by_operator[None]["calls"] == 2  # nobody answered
    by_did = {r["group"]: r["calls"] for r in (await _summary(api, group_by="did"))["rows"]}  # type: ignore[attr-defined]
    assert by_did == {"+74951110000": 2, "+74951112222": 2, None: 1}
    api.runtime.services["did_sources"] = {"+74951110000": "Yandex Direct", "+74951112222": "website"}
    by_source = {r["group"]: r for r in (await _summary(api, group_by="source"))["rows"]}  # type: ignore[attr-defined]
    assert by_source["website"]["calls"] == 2 and by_source["website"]["missed"] == 1
    assert by_source["Yandex Direct"]["avg_talk_seconds"] == 90.0


async def test_summary_csv_and_bad_input(api: Api) -> None:
    await _seed(api)
    resp = await api.client.get("/api/v1/reports/summary", params={**RANGE, "format": "csv"},
                                headers=api.auth("admin"))
    assert resp.status == 200 and resp.content_type == "text/csv"
    rows = list(csv.DictReader(io.StringIO(await resp.text())))
    assert [r["group"] for r in rows] == ["2026-11-20", "2026-11-21", "total"]
    assert rows[-1]["calls"] == "5" and rows[-1]["missed_rate"] == "0.2"
    for params in ({}, {"from": RANGE["from"]}, {**RANGE, "group_by": "week"}, {**RANGE, "format": "xml"},
                   {"from": RANGE["to"], "to": RANGE["from"]}, {"from": "x", "to": "y"}):
        resp = await api.client.get("/api/v1/reports/summary", params=params, headers=api.auth("manager"))
        assert resp.status == 422, params
        assert (await resp.json())["error"]["code"] == "invalid_parameter"


async def test_readyz_follows_the_pbx_connection(api: Api) -> None:
    resp = await api.client.get("/readyz", headers=api.auth("manager"))
    assert resp.status == 200
    assert await resp.json() == {"status": "ready", "checks": {"database": "ok", "pbx:main": "ok"}}
    await api.ami.stop()

    async def down() -> bool:
        r = await api.client.get("/readyz", headers=api.auth("manager"))
        return r.status == 503

    await wait_for(down)
    body = await (await api.client.get("/readyz", headers=api.auth("manager"))).json()
    assert body["status"] == "not_ready" and body["checks"]["pbx:main"] == "disconnected"


async def test_metrics(api: Api) -> None:
    await _seed(api)
    await api.client.get("/api/v1/calls", headers=api.auth("crm"))
    await api.client.get("/api/v1/calls/12345", headers=api.auth("crm"))
    resp = await api.client.get("/metrics", headers=api.auth("manager"))
    assert resp.status == 200
    text = await resp.text()
    assert 'pbx_bridge_calls{status="answered"} 4.0' in text
    assert 'pbx_bridge_calls{status="live"} 1.0' in text
    assert 'pbx_bridge_ami_connection_state{pbx="main",state="connected"} 1.0' in text
    assert ('pbx_bridge_http_request_duration_seconds_count{method="GET",route="/api/v1/calls/{id}",'
            'status="404"} 1.0') in text
    assert "pbx_bridge_live_event_subscribers 0.0" in text
    # Queue depths and event lag are read from what the components expose.
    import asyncio

    class Consumer:
        queue: asyncio.Queue[int] = asyncio.Queue()
        last_lag_seconds = 0.25

    Consumer.queue.put_nowait(1)
    Consumer.queue.put_nowait(2)
    api.runtime.services["calls"] = Consumer()
    text = await (await api.client.get("/metrics", headers=api.auth("admin"))).text()
    assert 'pbx_bridge_queue_depth{queue="calls"} 2.0' in text
    assert 'pbx_bridge_ami_event_lag_seconds{pbx="calls"} 0.25' in text
    # Each app has its own registry: a second one starts from zero.
    assert "pbx_bridge_http_request_duration_seconds_count" not in Metrics().exposition().decode()
