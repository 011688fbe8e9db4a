"""The reports page: the reports service's numbers (pbx_bridge.reports), SVG charts, CSV export."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from xml.etree import ElementTree
from zoneinfo import ZoneInfo

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy.ext.asyncio import AsyncEngine

from pbx_bridge.config import Settings
from pbx_bridge.db.engine import make_sessionmaker
from pbx_bridge.reports.summary import ad_channels, summary_report
from pbx_bridge.runtime import Runtime
from pbx_bridge.server.app import make_app
from pbx_bridge.web import users as store
from pbx_bridge.web.svg_charts import Series, nice_max, stacked_columns, stacked_rows
from tests.web_seed import insert_call

DAY1 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
DAY2 = datetime(2026, 11, 21, 23, 30, tzinfo=UTC)  # 02:30 on the 22nd in Moscow


async def seed(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await insert_call(conn, started_at=DAY1, status="answered", operator="101", wait_seconds=4,
                          talk_seconds=100)
        await insert_call(conn, started_at=DAY1 + timedelta(minutes=5), status="answered",
                          operator="102", operators_rung=["101", "102"], wait_seconds=25,
                          talk_seconds=50, did="+74952220000")
        await insert_call(conn, started_at=DAY1 + timedelta(minutes=9), status="no_answer",
                          operators_rung=["101", "102"], wait_seconds=70)
        # Hung up before any phone rang (in the IVR): missed, "no operator".
        await insert_call(conn, started_at=DAY1 + timedelta(minutes=15), status="abandoned",
                          operators_rung=[], wait_seconds=2)
        await insert_call(conn, started_at=DAY2, status="abandoned", operators_rung=["102"],
                          wait_seconds=12, did=None)
        await insert_call(conn, started_at=DAY2, status="busy", direction="outbound",
                          operator="101", operators_rung=["101"], did=None, wait_seconds=3)
        await insert_call(conn, started_at=DAY2, status="answered", direction="internal")
        await insert_call(conn, started_at=DAY2, live=True)  # still going: not counted
        await insert_call(conn, started_at=DAY1 - timedelta(days=30))  # outside the range


def _days(first: date, last: date, tz: str) -> tuple[datetime, datetime]:
    zone = ZoneInfo(tz)
    return (datetime.combine(first, time(), zone),
            datetime.combine(last + timedelta(days=1), time(), zone))


async def test_summary_numbers(engine: AsyncEngine) -> None:
    """The reports service (pbx_bridge.reports) the page draws: numbers checked by hand."""
    await seed(engine)
    first, last = date(2026, 11, 20), date(2026, 11, 22)
    names = {"+74952220000": "Yandex <Direct>"}
    async with engine.connect() as conn:
        report = await summary_report(conn, *_days(first, last, "UTC"), sources=names)
        moscow = await summary_report(conn, *_days(first, last, "Europe/Moscow"),
                                      timezone="Europe/Moscow")
        inbound = await summary_report(conn, *_days(first, last, "UTC"), direction="inbound")
    t = report.totals
    # The internal call, the live one and the one outside the range do not count.
    assert (t.calls, t.inbound, t.answered, t.missed, t.unanswered_outbound) == (6, 5, 2, 3, 1)
    assert t.missed_rate == 0.6  # missed / inbound
    assert t.avg_talk == 75.0
    assert t.avg_wait == pytest.approx((4 + 25 + 70 + 2 + 12 + 3) / 6)
    assert [(b.key, b.calls, b.answered, b.missed) for b in report.days_filled(first, last)] == [
        ("2026-11-20", 4, 2, 2), ("2026-11-21", 2, 0, 1), ("2026-11-22", 0, 0, 0)]
    assert [b.key for b in report.by_day] == ["2026-11-20", "2026-11-21"]  # days with calls
    # The same calls by Moscow days: the night calls move to the 22nd.
    assert [b.calls for b in moscow.days_filled(first, last)] == [4, 0, 2]
    ops = {b.key: (b.calls, b.answered, b.missed) for b in report.by_operator}
    # Missed calls count for every operator they rang ("missed by operator"); answered ones for
    # who answered; the call that rang nobody is "no operator" (None), listed last.
    assert ops == {"101": (3, 1, 1), "102": (3, 1, 2), None: (1, 0, 1)}
    assert report.by_operator[-1].key is None
    dids = {b.key: (b.calls, b.answered, b.missed) for b in report.by_did}
    assert dids == {"+74951110000": (3, 1, 2), "+74952220000": (1, 1, 0), None: (2, 0, 1)}
    sources = {b.key: (b.calls, b.answered, b.missed) for b in report.by_source}
    assert sources == {"+74951110000": (3, 1, 2), "Yandex <Direct>": (1, 1, 0), None: (2, 0, 1)}
    assert [(b.answered, b.missed) for b in report.wait_bands] == [
        (1, 1), (0, 1), (1, 0), (0, 0), (0, 1), (0, 0)]
    assert inbound.totals.calls == 5 and inbound.totals.unanswered_outbound == 0


def test_ad_channels_from_crm_did_sources() -> None:
    names = ad_channels({"8 (495) 111-00-00": "Яндекс", "74952220000": "Google", "junk": "x"}, "RU")
    assert names == {"+74951110000": "Яндекс", "+74952220000": "Google"}


def test_svg_is_valid_and_escapes_labels() -> None:
    evil = '<script>alert(1)</script>&"'
    svg = stacked_rows([evil, "102"], [Series("answered", "A & B", [3, 1]), Series("missed", "M", [1, 0])],
                       title="T<1>")
    root = ElementTree.fromstring(svg)  # well-formed XML
    assert "<script>" not in svg
    texts = [e.text for e in root.iter("{http://www.w3.org/2000/svg}text")]
    assert evil in texts and "A & B" in texts
    bars = [e for e in root.iter("{http://www.w3.org/2000/svg}rect") if e.get("height") != "11"]
    widths = sorted(float(b.get("width", "0")) for b in bars)
    assert len(widths) == 3 and widths[-1] == pytest.approx(3 * widths[0], rel=0.01)
    cols = stacked_columns(["a", "b"], [Series("answered", "A", [0, 0])], title="empty")
    ElementTree.fromstring(cols)
    assert nice_max(0) == 4 and nice_max(41) == 80 and nice_max(99) == 100


Client = TestClient[Any, Any]


async def manager_client(
    engine: AsyncEngine, settings: Settings, aiohttp_client: Callable[[web.Application], Awaitable[Client]]
) -> Client:
    async with engine.begin() as conn:
        await store.create_user(conn, username="anna", password="pass-word-1", role="manager")
    settings.crm.did_sources = {"+74952220000": "Yandex <Direct>"}
    client = await aiohttp_client(make_app(Runtime(settings=settings, engine=engine,
                                                   sessions=make_sessionmaker(engine))))
    resp = await client.post("/ui/login", data={"username": "anna", "password": "pass-word-1"})
    assert resp.status == 200
    return client


async def test_reports_page_and_csv(
    engine: AsyncEngine, settings: Settings,
    aiohttp_client: Callable[[web.Application], Awaitable[Client]],
) -> None:
    await seed(engine)
    client = await manager_client(engine, settings, aiohttp_client)
    resp = await client.get("/ui/reports?from=2026-11-20&to=2026-11-22",
                            headers={"Accept-Language": "ru"})
    assert resp.status == 200
    html = await resp.text()
    assert html.count("<svg") == 4
    kpis = re.findall(r'<span class="kpi-value">([^<]*)</span>', html)
    assert kpis == ["6", "2", "3", "60,0 %", "0:19", "1:15"]
    assert "Yandex &lt;Direct&gt;" in html and "Yandex <Direct>" not in html
    assert "(без оператора)" in html and "Звонки по рекламным каналам" in html
    assert "20.11" in html and "Звонки по дням" in html
    resp = await client.get("/ui/reports/summary.csv?from=2026-11-20&to=2026-11-22&group_by=source")
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/csv")
    assert "attachment" in resp.headers["Content-Disposition"]
    rows = list(csv.reader(io.StringIO((await resp.read()).decode("utf-8-sig"))))
    assert rows[0] == ["source", "calls", "inbound", "answered", "missed", "missed_rate",
                       "avg_wait_seconds", "avg_talk_seconds"]
    assert rows[1:-1] == [
        ["'+74951110000", "3", "3", "1", "2", "0.6667", "25.3", "100.0"],  # text, as every export
        ["Yandex <Direct>", "1", "1", "1", "0", "0.0000", "25.0", "50.0"],
        ["no DID", "2", "1", "0", "1", "1.0000", "7.5", ""]]
    assert rows[-1] == ["total", "6", "5", "2", "3", "0.6000", "19.3", "75.0"]
    ops = await client.get("/ui/reports/summary.csv?from=2026-11-20&to=2026-11-22&group_by=operator")
    op_rows = list(csv.reader(io.StringIO((await ops.read()).decode("utf-8-sig"))))
    assert [r[:5] for r in op_rows[1:]] == [["101", "3", "2", "1", "1"], ["102", "3", "3", "1", "2"],
                                            ["no operator", "1", "1", "0", "1"],
                                            ["total", "6", "5", "2", "3"]]
    day = await client.get("/ui/reports/summary.csv?from=2026-11-20&to=2026-11-21")
    assert [r[0] for r in csv.reader(io.StringIO((await day.read()).decode("utf-8-sig")))] == [
        "day", "2026-11-20", "2026-11-21", "total"]


@pytest.mark.parametrize("query", ["from=2026-13-01", "from=2026-11-20&to=2026-11-01",
                                   "direction=sideways", "from=2020-01-01&to=2026-01-01"])
async def test_reports_bad_input(
    engine: AsyncEngine, settings: Settings, query: str,
    aiohttp_client: Callable[[web.Application], Awaitable[Client]],
) -> None:
    client = await manager_client(engine, settings, aiohttp_client)
    page = await client.get("/ui/reports?" + query)
    assert page.status == 422 and 'class="error' in await page.text()
    exported = await client.get("/ui/reports/summary.csv?" + query)
    assert exported.status == 422
    assert (await exported.json())["error"]["code"] == "invalid_report"
    bad_group = await client.get("/ui/reports/summary.csv?group_by=did")  # the page groups by source
    assert bad_group.status == 422


def test_csv_cells_never_become_formulas() -> None:
    from pbx_bridge.web.pages import _csv_safe

    assert _csv_safe('=HYPERLINK("http://evil")') == "'=HYPERLINK(\"http://evil\")"
    assert _csv_safe("@SUM(A1)") == "'@SUM(A1)"
    assert _csv_safe("-2+3") == "'-2+3"
    assert _csv_safe("\t=1+1") == "'\t=1+1"
    # A DID stays text (a spreadsheet would make +74951110000 a number and drop the plus).
    assert _csv_safe("+74951110000") == "'+74951110000"
    assert _csv_safe("Yandex") == "Yandex"
